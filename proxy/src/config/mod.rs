//! Configuration: the TOML schema, loading with located errors, and semantic validation.
//!
//! A [`Config`] that [`load`] returns has been checked whole: every name a route or service
//! refers to exists, and every value is in range. Errors name the file, the line and the field.

mod error;
mod schema;
mod validate;

use std::path::Path;

pub use error::ConfigError;
pub use schema::*;

/// Reads, parses and validates the configuration file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::io(path, e))?;
    parse(path, &text)
}

/// Parses and validates configuration `text`; `path` is only used in error messages.
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
    let deserializer =
        toml::Deserializer::parse(text).map_err(|e| ConfigError::from_toml(path, text, String::new(), &e))?;
    let config: Config = serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let field = e.path().to_string();
        ConfigError::from_toml(path, text, field, e.inner())
    })?;
    validate::validate(&config).map_err(|v| ConfigError::from_violation(path, text, v))?;
    Ok(config)
}

/// Whether a configuration built in code passes the checks a loaded one does (the fuzz
/// targets build route tables directly).
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn is_valid(config: &Config) -> bool {
    validate::validate(config).is_ok()
}

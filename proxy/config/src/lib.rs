//! wasmesh's configuration: the TOML schema, loading with located errors, and semantic validation.
//!
//! A [`Config`] that [`load`] returns has been checked whole: every name a route or service
//! refers to exists, and every value is in range. Errors name the file, the line and the field.

#![deny(missing_docs)]

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
///
/// A text without a single setting is refused: it is what a file being written in place
/// looks like between its truncation and its first write, and every default it would stand
/// for (no listener, no route) leaves nothing to serve.
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
    if holds_no_setting(text) {
        return Err(ConfigError::empty(path));
    }
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
pub fn is_valid(config: &Config) -> bool {
    validate::validate(config).is_ok()
}

/// True when `text` has only blank lines and comments.
fn holds_no_setting(text: &str) -> bool {
    text.lines().map(str::trim).all(|line| line.is_empty() || line.starts_with('#'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_without_a_setting_is_refused_naming_the_file() {
        for text in ["", "\n\n", "  \t\r\n", "# wasmesh\n\n  # [admin]\n"] {
            let error = parse(Path::new("/etc/wasmesh.toml"), text).expect_err(text).to_string();
            assert!(error.starts_with("/etc/wasmesh.toml: is empty"), "{text:?}: {error}");
        }
    }

    #[test]
    fn one_setting_is_enough_to_parse() {
        let config = parse(Path::new("wasmesh.toml"), "# admin only\n[admin]\n").expect("valid");
        assert!(config.listeners.is_empty());
    }
}

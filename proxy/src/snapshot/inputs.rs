//! What a snapshot is built from besides the configuration and the registered instances: the
//! loaded plugins and the certificate and schema files, loaded and checked before a build.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{Config, PluginConfig};
use crate::contract::{ContractError, Contracts};
use crate::plugin::{Plugin, PluginError};
use crate::tls::{TlsError, TlsSet};

/// A plugin loaded from a file, kept so that a reload which changes neither its settings nor
/// its file reuses it instead of compiling it again.
#[derive(Debug, Clone)]
pub struct LoadedPlugin {
    /// Its settings.
    pub config: PluginConfig,
    /// Hash of the component file it was loaded from.
    pub hash: u64,
    /// The plugin.
    pub plugin: Plugin,
}

/// A configuration whose files cannot be loaded; the mesh keeps its current snapshot.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A plugin component.
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// A certificate, key or CA file.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A contract's JSON Schema file.
    #[error(transparent)]
    Contract(#[from] ContractError),
}

/// What a configuration's certificate and schema files hold, loaded and checked.
#[derive(Debug, Default)]
pub struct Assets {
    /// Listener and upstream TLS settings.
    pub tls: TlsSet,
    /// Compiled contracts, by service name.
    pub contracts: HashMap<String, Arc<Contracts>>,
}

impl Assets {
    /// Loads every certificate, key and schema `config` names; fails on the first that
    /// cannot be used, naming it.
    pub fn load(config: &Config) -> Result<Self, LoadError> {
        let tls = TlsSet::load(config)?;
        let mut contracts = HashMap::new();
        for service in &config.services {
            if let Some(c) = Contracts::load(service)? {
                contracts.insert(service.name.clone(), c);
            }
        }
        Ok(Self { tls, contracts })
    }
}

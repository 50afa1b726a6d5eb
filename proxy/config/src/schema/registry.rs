//! `[registry]`: where registered service instances are stored (embedded file, etcd, Consul).

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

/// Which store holds registered instances.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum RegistryBackend {
    /// A local file, written with fsync and atomic rename: one machine, no server needed.
    #[default]
    Embedded,
    /// An etcd cluster shared by several proxies.
    Etcd,
    /// A Consul agent.
    Consul,
}

/// The service registry behind the mesh API.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// `embedded`, `etcd` or `consul`.
    #[serde(default)]
    pub backend: RegistryBackend,
    /// Embedded: the data file, relative to the working directory.
    #[serde(default = "RegistryConfig::default_path")]
    pub path: std::path::PathBuf,
    /// etcd settings.
    #[serde(default)]
    pub etcd: EtcdConfig,
    /// Consul settings.
    #[serde(default)]
    pub consul: ConsulConfig,
}

impl RegistryConfig {
    fn default_path() -> std::path::PathBuf {
        "wasmesh-registry.json".into()
    }
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            backend: RegistryBackend::default(),
            path: Self::default_path(),
            etcd: EtcdConfig::default(),
            consul: ConsulConfig::default(),
        }
    }
}

/// The etcd registry: one key per instance under `prefix`, held by a lease.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EtcdConfig {
    /// Client URLs of the cluster.
    #[serde(default = "EtcdConfig::default_endpoints")]
    pub endpoints: Vec<String>,
    /// Key prefix of instance records.
    #[serde(default = "EtcdConfig::default_prefix")]
    pub prefix: String,
    /// Lease of instances registered without `ttl_seconds`, kept alive while this proxy runs.
    #[serde(default = "EtcdConfig::default_lease", with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// Connect and request timeout.
    #[serde(default = "EtcdConfig::default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

impl EtcdConfig {
    fn default_endpoints() -> Vec<String> {
        vec!["http://127.0.0.1:2379".to_owned()]
    }
    fn default_prefix() -> String {
        "/wasmesh/instances/".to_owned()
    }
    fn default_lease() -> Duration {
        Duration::from_secs(10)
    }
    fn default_timeout() -> Duration {
        Duration::from_secs(2)
    }
}

impl Default for EtcdConfig {
    fn default() -> Self {
        Self {
            endpoints: Self::default_endpoints(),
            prefix: Self::default_prefix(),
            lease_ttl: Self::default_lease(),
            timeout: Self::default_timeout(),
        }
    }
}

/// The Consul registry: the local agent's service API and blocking health queries.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConsulConfig {
    /// The agent's HTTP address, `host:port`.
    #[serde(default = "ConsulConfig::default_address")]
    pub address: SocketAddr,
    /// ACL token sent as `X-Consul-Token`.
    #[serde(default)]
    pub token: Option<String>,
    /// Longest wait of one blocking query.
    #[serde(default = "ConsulConfig::default_wait", with = "humantime_serde")]
    pub wait: Duration,
    /// Timeout of non-blocking requests.
    #[serde(default = "ConsulConfig::default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

impl ConsulConfig {
    fn default_address() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 8500))
    }
    fn default_wait() -> Duration {
        Duration::from_secs(30)
    }
    fn default_timeout() -> Duration {
        Duration::from_secs(2)
    }
}

impl Default for ConsulConfig {
    fn default() -> Self {
        Self {
            address: Self::default_address(),
            token: None,
            wait: Self::default_wait(),
            timeout: Self::default_timeout(),
        }
    }
}

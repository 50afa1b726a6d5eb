//! Running the proxy: bind every listener, serve until a signal, then drain.

use std::convert::Infallible;
use std::sync::Arc;

use hyper::service::service_fn;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::Admin;
use crate::config::Config;
use crate::forward::{Downstream, forward};
use crate::listener::{self, BindError, ConnLimits, ListenerMetrics};
use crate::mesh::Mesh;
use crate::telemetry::metrics::ListenerLabels;
use crate::upstream::conn_pool;
use crate::upstream::health::HealthSupervisor;

/// Limits of the admin listener, which serves few, short requests.
const ADMIN_LIMITS: ConnLimits = ConnLimits {
    header_read_timeout: std::time::Duration::from_secs(10),
    idle_timeout: std::time::Duration::from_secs(60),
    max_connections: 256,
};

/// How often idle upstream connections are checked for expiry and remote closes.
const POOL_SWEEP_PERIOD: std::time::Duration = std::time::Duration::from_millis(250);

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not bind.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// A plugin could not load.
    #[error(transparent)]
    Plugin(#[from] crate::plugin::PluginError),
}

/// A running proxy.
#[derive(Debug)]
pub struct Server {
    /// Shared state.
    pub mesh: Arc<Mesh>,
    health: Arc<HealthSupervisor>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl Server {
    /// Binds the admin and proxy listeners of `config` and starts serving. Must run inside a
    /// Tokio runtime.
    pub fn start(config: Config) -> Result<Self, StartError> {
        let admin_addr = config.admin.listen;
        let admin_token = config.admin.token.clone();
        let listeners = config.listeners.clone();
        // Bind everything before serving anything, so a taken port fails the start cleanly.
        let admin_tcp = listener::bind(admin_addr)?;
        let proxy_tcp = listeners.iter().map(|l| listener::bind(l.listen)).collect::<Result<Vec<_>, _>>()?;

        let mesh = Mesh::new(config)?;
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();

        for (cfg, tcp) in listeners.into_iter().zip(proxy_tcp) {
            let labels = ListenerLabels { listener: cfg.name.clone() };
            let metrics = ListenerMetrics {
                open: mesh.metrics.downstream_connections.get_or_create_owned(&labels),
                rejected: mesh.metrics.downstream_rejected.get_or_create_owned(&labels),
            };
            let limits = ConnLimits {
                header_read_timeout: cfg.header_read_timeout,
                idle_timeout: cfg.idle_timeout,
                max_connections: cfg.max_connections,
            };
            let mesh = mesh.clone();
            let name = cfg.name.clone();
            tracing::info!(listener = %cfg.name, addr = %cfg.listen, "proxy listening");
            tracker.spawn(listener::serve(tcp, limits, metrics, shutdown.clone(), tracker.clone(), move |peer| {
                let mesh = mesh.clone();
                let down = Arc::new(Downstream::new(&name, peer, "http"));
                service_fn(move |req| {
                    let (mesh, down) = (mesh.clone(), down.clone());
                    async move { Ok::<_, Infallible>(forward(mesh, down, req).await) }
                })
            }));
        }

        let health = Arc::new(HealthSupervisor::default());
        health.reconcile(&mesh.snapshot(), &mesh.metrics);

        let sweep_mesh = mesh.clone();
        conn_pool::spawn_sweeper(
            move || {
                let snap = sweep_mesh.snapshot();
                snap.services.iter().flat_map(|s| s.endpoints.iter().map(|e| e.conns.clone())).collect()
            },
            POOL_SWEEP_PERIOD,
        );

        let admin = Arc::new(Admin::new(mesh.clone(), admin_token));
        tracing::info!(addr = %admin_addr, "admin listening");
        tracker.spawn(listener::serve(
            admin_tcp,
            ADMIN_LIMITS,
            ListenerMetrics::default(),
            shutdown.clone(),
            tracker.clone(),
            move |_peer| {
                let admin = admin.clone();
                service_fn(move |req| {
                    let admin = admin.clone();
                    async move { Ok::<_, Infallible>(admin.handle(req).await) }
                })
            },
        ));
        Ok(Self { mesh, health, shutdown, tracker })
    }

    /// Stops accepting, lets in-flight requests finish for up to `drain`, then returns.
    /// Returns `false` when connections were still open at the deadline.
    pub async fn shutdown(self, drain: std::time::Duration) -> bool {
        self.shutdown.cancel();
        self.health.stop_all();
        self.tracker.close();
        tokio::time::timeout(drain, self.tracker.wait()).await.is_ok()
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn termination_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: draining"),
        _ = int.recv() => tracing::info!("SIGINT: draining"),
    }
    Ok(())
}

//! Running the proxy: bind every listener, serve until a signal, then drain; follow the
//! registry; and, when started from a file, reload on change, SIGHUP or `POST /reload`.

use std::path::PathBuf;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::Admin;
use crate::config::Config;
use crate::listener::{self, BindError, ConnLimits, HeadLimits, ListenerMetrics};
use crate::listener_set::ListenerSet;
use crate::mesh::Mesh;
use crate::message::{ProxyRequest, ProxyResponse};
use crate::registry::{self, InstanceSet};
use crate::reload::Reloader;
use crate::upstream::conn_pool;

/// Limits of the admin listener, which serves few, short requests.
const ADMIN_LIMITS: ConnLimits = ConnLimits {
    header_read_timeout: std::time::Duration::from_secs(10),
    idle_timeout: std::time::Duration::from_secs(60),
    max_connections: 256,
    head: HeadLimits::DEFAULT,
};

/// How often idle upstream connections are checked for expiry and remote closes.
const POOL_SWEEP_PERIOD: std::time::Duration = std::time::Duration::from_millis(250);

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not bind.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// A plugin, certificate or key could not load.
    #[error(transparent)]
    Load(#[from] crate::mesh::LoadError),
    /// The registry could not be opened.
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
    /// The configuration file could not be watched.
    #[error("cannot watch the configuration: {0}")]
    Watch(#[from] notify::Error),
}

/// A running proxy.
#[derive(Debug)]
pub struct Server {
    /// Shared state.
    pub mesh: Arc<Mesh>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl Server {
    /// Binds the admin and proxy listeners of `config`, opens the registry and starts serving.
    /// With `source` (the file `config` was read from), also reloads when that file or a
    /// plugin it names changes, on SIGHUP and on `POST /reload`.
    pub async fn start(config: Config, source: Option<PathBuf>) -> Result<Self, StartError> {
        let admin_addr = config.admin.listen;
        let admin_token = config.admin.token.clone();
        // Bind everything before serving anything, so a taken port fails the start cleanly.
        let admin_tcp = listener::bind(admin_addr)?;
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let listeners = ListenerSet::new(shutdown.clone(), tracker.clone());
        let bound = listeners.prepare(&config.listeners)?;

        let registry = registry::open(&config.registry).await?;
        let mesh = Mesh::new(config)?;
        // The instances the registry already holds (persisted, or in etcd or Consul) are in the
        // snapshot before anything serves, so a restart never answers from an empty view.
        let view = registry.watch();
        let known = view.borrow().clone();
        if *known != *mesh.snapshot().instances {
            mesh.set_instances(known);
        }
        listeners.commit(&mesh, bound);
        tokio::spawn(follow_registry(mesh.clone(), view, shutdown.clone()));

        let sweep_mesh = mesh.clone();
        conn_pool::spawn_sweeper(
            move || {
                let snap = sweep_mesh.snapshot();
                snap.services.iter().flat_map(|s| s.endpoints.iter().map(|e| e.conns.clone())).collect()
            },
            POOL_SWEEP_PERIOD,
        );

        let reloader = match source {
            Some(path) => {
                let reloader = Arc::new(Reloader::new(path, mesh.clone(), listeners));
                crate::reload::watch(reloader.clone(), shutdown.clone())?;
                tokio::spawn(reload_on_sighup(reloader.clone(), shutdown.clone()));
                Some(reloader)
            }
            None => None,
        };

        let admin = Arc::new(Admin::new(mesh.clone(), registry, reloader, admin_token));
        tracing::info!(addr = %admin_addr, "admin listening");
        tracker.spawn(listener::serve(
            Arc::new(admin_tcp),
            ADMIN_LIMITS,
            ListenerMetrics::default(),
            None,
            shutdown.clone(),
            tracker.clone(),
            move |peer| {
                let admin = admin.clone();
                move |req: Box<ProxyRequest>| {
                    let admin = admin.clone();
                    async move { ProxyResponse::boxed(admin.handle(req.into_http(), peer).await) }
                }
            },
        ));
        Ok(Self { mesh, shutdown, tracker })
    }

    /// Stops accepting, lets in-flight requests finish for up to `drain`, exports the spans
    /// still queued (within the export timeout), then returns. Returns `false` when
    /// connections were still open at the deadline.
    pub async fn shutdown(self, drain: std::time::Duration) -> bool {
        self.shutdown.cancel();
        self.mesh.stop_checks();
        self.tracker.close();
        let drained = tokio::time::timeout(drain, self.tracker.wait()).await.is_ok();
        if let Some(export) = self.mesh.snapshot().tracing.export.clone() {
            let _ = tokio::task::spawn_blocking(move || export.shutdown()).await;
        }
        drained
    }
}

/// Rebuilds the snapshot whenever the registry's view changes, until shutdown.
async fn follow_registry(
    mesh: Arc<Mesh>,
    mut view: tokio::sync::watch::Receiver<Arc<InstanceSet>>,
    shutdown: CancellationToken,
) {
    loop {
        let instances = view.borrow_and_update().clone();
        if *instances != *mesh.snapshot().instances {
            let version = mesh.set_instances(instances.clone());
            tracing::debug!(version, instances = instances.len(), "registry change applied");
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = view.changed() => if changed.is_err() { return },
        }
    }
}

/// Reloads on every SIGHUP until shutdown.
async fn reload_on_sighup(reloader: Arc<Reloader>, shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot install the SIGHUP handler; reload on change and POST /reload still work");
        return;
    };
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = hup.recv() => { reloader.reload("sighup").await; }
        }
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

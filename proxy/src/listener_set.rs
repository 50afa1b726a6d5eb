//! The proxy's listeners as a set that a reload reconciles with the configuration: unchanged
//! ones keep serving with their connections, changed ones restart their accept loop on the same
//! socket, new ones start and removed ones drain.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::ListenerConfig;
use crate::forward::{Downstream, forward};
use crate::listener::{self, BindError, ConnLimits, HeadLimits, ListenerMetrics, TlsSource};
use crate::mesh::Mesh;
use crate::telemetry::metrics::ListenerLabels;

/// The proxy listeners, which a reload adds, restarts and removes by name.
#[derive(Debug)]
pub struct ListenerSet {
    running: Mutex<HashMap<String, Running>>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

#[derive(Debug)]
struct Running {
    config: ListenerConfig,
    tcp: Arc<TcpListener>,
    /// Stops this listener's accept loop and drains its connections.
    stop: CancellationToken,
}

/// Sockets bound for a listener change that is not yet serving: dropped, they close.
#[derive(Debug)]
pub struct BoundListeners {
    wanted: Vec<(ListenerConfig, Arc<TcpListener>)>,
}

impl ListenerSet {
    /// An empty set; its listeners stop with `shutdown` and their tasks are tracked by `tracker`.
    pub fn new(shutdown: CancellationToken, tracker: TaskTracker) -> Arc<Self> {
        Arc::new(Self { running: Mutex::new(HashMap::new()), shutdown, tracker })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Binds the sockets `wanted` needs that are not open yet; a listener at an address
    /// already served keeps its socket. Nothing changes until [`ListenerSet::commit`].
    pub fn prepare(&self, wanted: &[ListenerConfig]) -> Result<BoundListeners, BindError> {
        let running = self.lock();
        let wanted = wanted
            .iter()
            .map(|cfg| {
                let open = running.values().find(|r| r.config.listen == cfg.listen).map(|r| r.tcp.clone());
                let tcp = match open {
                    Some(tcp) => tcp,
                    None => Arc::new(listener::bind(cfg.listen)?),
                };
                Ok((cfg.clone(), tcp))
            })
            .collect::<Result<_, BindError>>()?;
        Ok(BoundListeners { wanted })
    }

    /// Serves `bound`: unchanged listeners keep running with their connections, changed ones
    /// restart their accept loop on the same socket, new ones start, and those no longer
    /// wanted stop accepting and drain.
    pub fn commit(&self, mesh: &Arc<Mesh>, bound: BoundListeners) {
        let mut running = self.lock();
        let mut next = HashMap::new();
        for (cfg, tcp) in bound.wanted {
            match running.remove(&cfg.name) {
                Some(current) if current.config == cfg => {
                    next.insert(cfg.name.clone(), current);
                    continue;
                }
                Some(changed) => changed.stop.cancel(),
                None => {}
            }
            // A listener renamed at the same address hands its socket over.
            let moved = running.iter().find(|(_, r)| Arc::ptr_eq(&r.tcp, &tcp)).map(|(n, _)| n.clone());
            if let Some(previous) = moved.and_then(|n| running.remove(&n)) {
                previous.stop.cancel();
            }
            let stop = self.shutdown.child_token();
            self.spawn(mesh, &cfg, tcp.clone(), stop.clone());
            next.insert(cfg.name.clone(), Running { config: cfg, tcp, stop });
        }
        for (name, gone) in running.drain() {
            tracing::info!(listener = %name, "listener removed; draining its connections");
            gone.stop.cancel();
        }
        *running = next;
    }

    fn spawn(&self, mesh: &Arc<Mesh>, cfg: &ListenerConfig, tcp: Arc<TcpListener>, stop: CancellationToken) {
        let labels = ListenerLabels { listener: cfg.name.clone() };
        let metrics = ListenerMetrics {
            open: mesh.metrics.downstream_connections.get_or_create_owned(&labels),
            rejected: mesh.metrics.downstream_rejected.get_or_create_owned(&labels),
            tls_failures: mesh.metrics.tls_handshake_failures.get_or_create_owned(&labels),
        };
        let limits = ConnLimits {
            header_read_timeout: cfg.header_read_timeout,
            idle_timeout: cfg.idle_timeout,
            max_connections: cfg.max_connections,
            head: HeadLimits { max_bytes: cfg.max_request_head_bytes(), max_headers: cfg.max_request_headers },
        };
        // A TLS listener takes its certificates from the snapshot in force at each handshake.
        let tls: Option<TlsSource> = cfg.tls.as_ref().map(|_| {
            let (mesh, name) = (mesh.clone(), cfg.name.clone());
            Arc::new(move || mesh.snapshot().listener(&name).and_then(|(_, l)| l.tls.clone())) as TlsSource
        });
        let proto = if tls.is_some() { "https" } else { "http" };
        let mesh = mesh.clone();
        let name = cfg.name.clone();
        tracing::info!(listener = %cfg.name, addr = %cfg.listen, tls = tls.is_some(), "proxy listening");
        let serving = listener::serve(tcp, limits, metrics, tls, stop, self.tracker.clone(), move |peer| {
            let mesh = mesh.clone();
            let down = Arc::new(Downstream::new(&name, peer, proto));
            move |req| forward(mesh.clone(), down.clone(), req)
        });
        self.tracker.spawn(serving);
    }
}

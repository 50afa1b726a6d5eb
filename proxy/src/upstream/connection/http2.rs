//! One endpoint's shared HTTP/2 connection: the handle requests send on, and when it was last
//! used. Opening it and sending on it is the HTTP/2 client's ([`crate::upstream::http2`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use hyper::client::conn::http2::SendRequest;

use crate::body::Body;

/// One endpoint's shared HTTP/2 connection.
#[derive(Debug, Default)]
pub struct Http2Conn {
    live: ArcSwapOption<Live>,
    /// Held by the request opening a connection, so that others wait for it rather than open
    /// their own.
    pub(crate) opening: tokio::sync::Mutex<()>,
}

#[derive(Debug)]
struct Live {
    sender: SendRequest<Body>,
    /// When a request last took the connection ([`crate::clock`] milliseconds).
    last_used: AtomicU64,
}

impl Http2Conn {
    /// A handle to the open connection, if there is one; `now_ms` marks it used.
    pub fn ready(&self, now_ms: u64) -> Option<SendRequest<Body>> {
        let live = self.live.load();
        let live = live.as_ref().filter(|l| !l.sender.is_closed())?;
        // A store only when the millisecond changed: requests on other cores mostly just read.
        if live.last_used.load(Ordering::Relaxed) != now_ms {
            live.last_used.store(now_ms, Ordering::Relaxed);
        }
        Some(live.sender.clone())
    }

    /// Makes `sender`, a connection just opened, the one requests share; `now_ms` marks it used.
    pub fn install(&self, sender: SendRequest<Body>, now_ms: u64) {
        self.live.store(Some(Arc::new(Live { sender, last_used: AtomicU64::new(now_ms) })));
    }

    /// Lets go of the connection when the endpoint closed it or it has not been used for
    /// `idle`; requests still on it finish, then it closes.
    pub fn sweep(&self, now_ms: u64, idle: Duration) {
        let current = self.live.load_full();
        if let Some(live) = &current {
            let unused = now_ms.saturating_sub(live.last_used.load(Ordering::Relaxed));
            if live.sender.is_closed() || u128::from(unused) >= idle.as_millis() {
                self.live.compare_and_swap(&current, None);
            }
        }
    }
}

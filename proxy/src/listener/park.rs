//! Where a listener's quiet connections wait for their next bytes: in one task per listener
//! (the lot), not one task each.
//!
//! A connection that has sent nothing yet, or a plain HTTP/1.1 connection quiet between
//! requests, needs nothing but its socket until bytes arrive. Here it is a slab entry, a
//! readiness waker that names the entry, and a timer entry for its idle timeout: less than a
//! task with its own timer and shutdown listener, which is what keeps memory per idle
//! connection level with nginx. When bytes arrive the lot hands the connection back to the
//! listener, which gives it a serving task again; when its idle timeout passes first, or the
//! listener stops, the lot closes it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use slab::Slab;
use tokio::io::ReadBuf;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::time::{DelayQueue, delay_queue};

use super::Admission;

/// A connection to keep until its next bytes arrive.
#[derive(Debug)]
pub struct Waiting {
    /// The connection.
    pub stream: TcpStream,
    /// Its place among the listener's connections, held while it waits.
    pub admission: Admission,
    /// How long it may stay quiet before it is closed.
    pub wait: Duration,
}

/// Where connections are parked, usable from any task.
#[derive(Debug)]
pub struct Lot {
    arrivals: mpsc::UnboundedSender<Waiting>,
}

impl Lot {
    /// A lot and the loop that keeps it; run the loop with [`Keeper::run`].
    pub fn new() -> (Self, Keeper) {
        let (arrivals, arriving) = mpsc::unbounded_channel();
        let (woke, woken) = mpsc::unbounded_channel();
        let keeper = Keeper { arriving, woke, woken, slots: Slab::new(), expiries: DelayQueue::new(), generation: 0 };
        (Self { arrivals }, keeper)
    }

    /// Keeps `conn` until its next bytes arrive; once the lot has stopped, closes it.
    pub fn park(&self, conn: Waiting) {
        // A send fails only after the keeper has stopped: the dropped connection closes.
        let _ = self.arrivals.send(conn);
    }
}

/// Whether bytes have arrived on `stream` (`Ready(true)`), the client closed it or it failed
/// (`Ready(false)`), or nothing has arrived yet; then `waker` is woken when something does.
pub fn peek(stream: &TcpStream, waker: &Waker) -> Poll<bool> {
    let mut byte = [0u8; 1];
    // A peek, not `poll_read_ready`: tokio reports a freshly accepted socket readable before
    // any byte came, and only an attempt that would block clears that.
    stream.poll_peek(&mut Context::from_waker(waker), &mut ReadBuf::new(&mut byte)).map(|r| matches!(r, Ok(n) if n > 0))
}

/// A parked connection.
#[derive(Debug)]
struct Slot {
    stream: TcpStream,
    admission: Admission,
    expiry: delay_queue::Key,
    /// Tells this connection's wake-ups from those of an earlier one in the same slab entry.
    generation: u32,
}

/// A wake-up of the slab entry `key` for the connection parked there as `generation`.
#[derive(Debug, Clone, Copy)]
struct Woken {
    key: u32,
    generation: u32,
}

/// The waker a parked socket holds: its wake-up is queued to the keeper.
struct SlotWaker {
    woken: Woken,
    queue: mpsc::UnboundedSender<Woken>,
}

impl Wake for SlotWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let _ = self.queue.send(self.woken);
    }
}

/// The loop that keeps a lot: takes arrivals, watches their sockets and timers.
#[derive(Debug)]
pub struct Keeper {
    arriving: mpsc::UnboundedReceiver<Waiting>,
    woke: mpsc::UnboundedSender<Woken>,
    woken: mpsc::UnboundedReceiver<Woken>,
    slots: Slab<Slot>,
    expiries: DelayQueue<usize>,
    generation: u32,
}

impl Keeper {
    /// Keeps the lot until `stop` fires, then closes every connection left in it; each
    /// connection whose bytes arrive goes to `resume`.
    pub async fn run<R>(mut self, stop: CancellationToken, mut resume: R)
    where
        R: FnMut(TcpStream, SocketAddr, Admission),
    {
        let stopped = stop.cancelled();
        tokio::pin!(stopped);
        std::future::poll_fn(|cx| {
            if stopped.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
            self.poll_events(cx, &mut resume);
            Poll::Pending
        })
        .await;
        if !self.slots.is_empty() {
            tracing::debug!(connections = self.slots.len(), "listener stopped: closing quiet connections");
        }
    }

    /// Takes every event ready: arrivals, wake-ups and expiries. Each channel and the timer
    /// register `cx` when they have nothing more.
    fn poll_events<R>(&mut self, cx: &mut Context<'_>, resume: &mut R)
    where
        R: FnMut(TcpStream, SocketAddr, Admission),
    {
        while let Poll::Ready(Some(conn)) = self.arriving.poll_recv(cx) {
            self.admit(conn, resume);
        }
        while let Poll::Ready(Some(woken)) = self.woken.poll_recv(cx) {
            let current = self.slots.get(woken.key as usize).is_some_and(|s| s.generation == woken.generation);
            if current {
                self.check(woken.key as usize, resume);
            }
        }
        while let Poll::Ready(Some(expired)) = self.expiries.poll_expired(cx) {
            let slot = self.slots.remove(expired.into_inner());
            tracing::debug!(peer = ?slot.stream.peer_addr().ok(), "closing idle connection");
        }
    }

    fn admit<R>(&mut self, conn: Waiting, resume: &mut R)
    where
        R: FnMut(TcpStream, SocketAddr, Admission),
    {
        self.generation = self.generation.wrapping_add(1);
        let entry = self.slots.vacant_entry();
        let key = entry.key();
        let expiry = self.expiries.insert(key, conn.wait);
        entry.insert(Slot { stream: conn.stream, admission: conn.admission, expiry, generation: self.generation });
        self.check(key, resume);
    }

    /// Resumes or closes the connection in `key` if its socket has news; otherwise leaves it
    /// parked, to be woken when it does.
    fn check<R>(&mut self, key: usize, resume: &mut R)
    where
        R: FnMut(TcpStream, SocketAddr, Admission),
    {
        let slot = &self.slots[key];
        let woken = Woken { key: key as u32, generation: slot.generation };
        let waker = Waker::from(Arc::new(SlotWaker { woken, queue: self.woke.clone() }));
        let Poll::Ready(arrived) = peek(&slot.stream, &waker) else { return };
        let slot = self.slots.remove(key);
        self.expiries.remove(&slot.expiry);
        // The client's address is asked for again rather than kept: a parked connection costs
        // less without it. A client already gone has none.
        if arrived && let Ok(peer) = slot.stream.peer_addr() {
            resume(slot.stream, peer, slot.admission);
        }
    }
}

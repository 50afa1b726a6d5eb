//! Idle detection for downstream connections without a clock read per I/O call: the I/O
//! wrapper raises a flag, and a watchdog that wakes four times per idle period lowers it.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A TCP stream that records that bytes moved.
#[derive(Debug)]
pub struct ActivityIo {
    inner: TcpStream,
    active: Arc<AtomicBool>,
}

impl ActivityIo {
    /// Wraps `inner`; the returned flag is raised on every read or write that moves bytes.
    pub fn new(inner: TcpStream) -> (Self, Arc<AtomicBool>) {
        let active = Arc::new(AtomicBool::new(true));
        (Self { inner, active: active.clone() }, active)
    }

    fn mark(&self) {
        self.active.store(true, Ordering::Relaxed);
    }
}

/// Resolves once `active` stayed low for `timeout` (to within a quarter of it).
pub async fn idle_expired(active: Arc<AtomicBool>, timeout: Duration) {
    let tick = timeout / 4;
    let mut quiet = 0;
    loop {
        tokio::time::sleep(tick).await;
        if active.swap(false, Ordering::Relaxed) {
            quiet = 0;
        } else {
            quiet += 1;
            if quiet >= 4 {
                return;
            }
        }
    }
}

impl AsyncRead for ActivityIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() != before {
            this.mark();
        }
        polled
    }
}

impl AsyncWrite for ActivityIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.mark();
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.mark();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

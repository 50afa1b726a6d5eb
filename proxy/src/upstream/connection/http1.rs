//! One upstream HTTP/1.1 connection and its buffers.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::BytesMut;
use tokio::time::Sleep;

use super::OpenGuard;
use crate::upstream::stream::UpstreamStream;

/// Read buffer growth step: enough for most response heads and small bodies in one read.
const READ_CHUNK: usize = 16 * 1024;

/// A connection to an endpoint (TCP or TLS), counted in its open-connection gauge while it lives.
#[derive(Debug)]
pub struct Conn {
    stream: UpstreamStream,
    /// Bytes read and not yet consumed (the rest of a head, or body bytes).
    pub(crate) read_buf: BytesMut,
    /// Scratch space for encoding request heads, kept to avoid an allocation per request.
    pub(crate) write_buf: BytesMut,
    /// The timer that bounds each exchange, kept for the connection's life: moving a
    /// registered deadline later is one atomic store, where a fresh timer per request takes
    /// the timer driver's lock twice (insert and clear).
    deadline: Option<Pin<Box<Sleep>>>,
    open: OpenGuard,
}

impl Conn {
    /// Wraps a connected stream, counted while it lives by `open`.
    pub fn new(stream: UpstreamStream, open: OpenGuard) -> Self {
        Self {
            stream,
            read_buf: BytesMut::with_capacity(READ_CHUNK),
            write_buf: BytesMut::with_capacity(1024),
            deadline: None,
            open,
        }
    }

    /// Frees the buffers of a connection that waits unused in the pool; the next exchange
    /// allocates them again. Keeps them when they hold unread bytes.
    pub fn release_buffers(&mut self) {
        if self.read_buf.is_empty() && self.read_buf.capacity() > 0 {
            self.read_buf = BytesMut::new();
            self.write_buf = BytesMut::new();
        }
    }

    /// The underlying stream.
    pub fn stream_mut(&mut self) -> &mut UpstreamStream {
        &mut self.stream
    }

    /// Reads more bytes into `read_buf`; `Ok(0)` means the peer closed.
    pub(crate) fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.read_buf.is_empty() {
            // Every earlier response was consumed: start again at the front of the buffer
            // (when no response still holds a piece of it), so each exchange reuses the same
            // warm memory instead of walking through the whole chunk.
            let _ = self.read_buf.try_reclaim(READ_CHUNK);
        }
        if self.read_buf.capacity() - self.read_buf.len() < READ_CHUNK / 4 {
            self.read_buf.reserve(READ_CHUNK);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.stream), cx, &mut self.read_buf)
    }

    /// The stream and the write buffer, to write a request body through.
    pub(crate) fn stream_and_write_buf(&mut self) -> (&mut UpstreamStream, &mut BytesMut) {
        (&mut self.stream, &mut self.write_buf)
    }

    /// Reads more bytes into `read_buf`; `Ok(0)` means the peer closed.
    pub(crate) async fn fill(&mut self) -> io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_fill(cx)).await
    }

    /// The connection's timer, set to fire at `deadline`; give it back with [`Self::keep_timer`].
    pub(crate) fn timer_until(&mut self, deadline: Instant) -> Pin<Box<Sleep>> {
        match self.deadline.take() {
            Some(mut timer) => {
                timer.as_mut().reset(deadline.into());
                timer
            }
            None => Box::pin(tokio::time::sleep_until(deadline.into())),
        }
    }

    /// Keeps `timer` for the next exchange.
    pub(crate) fn keep_timer(&mut self, timer: Pin<Box<Sleep>>) {
        self.deadline = Some(timer);
    }

    /// Gives up the stream, any bytes already read past the response head (for upgrades),
    /// and the guard that keeps it counted as open.
    pub fn into_parts(self) -> (UpstreamStream, BytesMut, OpenGuard) {
        (self.stream, self.read_buf, self.open)
    }
}

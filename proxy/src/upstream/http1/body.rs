//! A response body read straight from the upstream connection by whoever polls it; the
//! connection goes back to its pool the moment the body ends cleanly.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};

use super::Http1Error;
use crate::body::BoxError;
use crate::upstream::conn_pool::ConnPool;
use crate::upstream::connection::Conn;
use wasmesh_http1::decode::{BodyDecoder, Decoded};

/// A streamed HTTP/1.1 response body.
#[derive(Debug)]
pub struct Http1Body {
    /// `None` once the body has ended.
    conn: Option<Box<Conn>>,
    pool: Arc<ConnPool>,
    decoder: BodyDecoder,
    reusable: bool,
}

impl Http1Body {
    pub(super) fn new(conn: Box<Conn>, pool: Arc<ConnPool>, decoder: BodyDecoder, reusable: bool) -> Self {
        Self { conn: Some(conn), pool, decoder, reusable }
    }

    fn finish(&mut self) {
        if let Some(conn) = self.conn.take()
            && self.reusable
            && conn.read_buf.is_empty()
        {
            self.pool.checkin(conn, std::time::Instant::now());
        }
    }
}

impl http_body::Body for Http1Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else { return Poll::Ready(None) };
            match this.decoder.decode(&mut conn.read_buf) {
                Err(e) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(Http1Error::from(e).into())));
                }
                Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                Ok(Decoded::Done) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(Decoded::NeedMore) => {}
            }
            match conn.poll_fill(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) if this.decoder.ends_at_eof() => {
                    this.conn = None;
                    return Poll::Ready(None);
                }
                Poll::Ready(Ok(0)) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(Http1Error::BodyIncomplete.into())));
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(Http1Error::Io(e).into())));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.conn.is_none() || self.decoder == BodyDecoder::Length(0)
    }

    fn size_hint(&self) -> SizeHint {
        match self.decoder {
            BodyDecoder::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

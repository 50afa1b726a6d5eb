//! Reading a message body into memory, bounded in size and in time: for contract checks
//! (the whole body, up to the contract's limit) and for retries (a small request body kept
//! to be sent again). Everything else streams.

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use http_body::Body as _;
use http_body_util::BodyExt;

use crate::body::Body;
use crate::send::attempts::RequestBody;
use crate::telemetry::metrics::ErrorKind;

/// A body read in full (within the limit), or what was read before the limit and the rest.
pub(super) enum Read {
    /// The whole body.
    Whole(Bytes),
    /// The body passed the limit: the bytes read so far, and the body to read on from.
    TooLarge { prefix: Bytes, rest: Body },
}

/// Reads `body` until its end or until it passes `limit` bytes, by `deadline`. Trailers are
/// dropped: the bodies read here (JSON for a schema, small request bodies for replay) carry none.
pub(super) async fn read_limited(mut body: Body, limit: usize, deadline: Instant) -> Result<Read, ErrorKind> {
    if body.size_hint().lower() > limit as u64 {
        return Ok(Read::TooLarge { prefix: Bytes::new(), rest: body });
    }
    let mut buf = BytesMut::new();
    loop {
        let frame = match tokio::time::timeout_at(deadline.into(), body.frame()).await {
            Err(_) => return Err(ErrorKind::timeout),
            Ok(None) => return Ok(Read::Whole(buf.freeze())),
            Ok(Some(Err(_))) => return Err(ErrorKind::bad_request),
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            buf.extend_from_slice(&data);
            if buf.len() > limit {
                return Ok(Read::TooLarge { prefix: buf.freeze(), rest: body });
            }
        }
    }
}

/// Reads `body`, when it is announced at no more than `limit` bytes, so that every attempt can
/// send it; otherwise leaves it to stream. A body of unknown or larger size is not read:
/// buffering it would delay and cost every request for the sake of a retry that rarely happens.
pub(super) async fn replayable(body: &mut Body, limit: usize, deadline: Instant) -> Result<RequestBody, ErrorKind> {
    if body.is_end_stream() {
        return Ok(RequestBody::Replayable(Bytes::new()));
    }
    match body.size_hint().exact() {
        Some(n) if n <= limit as u64 => match read_limited(std::mem::take(body), limit, deadline).await? {
            Read::Whole(bytes) => Ok(RequestBody::Replayable(bytes)),
            // More bytes than the body announced: the message is malformed.
            Read::TooLarge { .. } => Err(ErrorKind::bad_request),
        },
        _ => Ok(RequestBody::Streamed),
    }
}

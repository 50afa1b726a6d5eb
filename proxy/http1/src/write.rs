//! Writing a message body after its head, framed by length or in chunks (downstream
//! responses, upstream requests).

use std::io;
use std::pin::Pin;
use std::task::Poll;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::BoxError;

/// Buffered body bytes are written out at this size; larger frames go straight out.
pub const WRITE_CHUNK: usize = 16 * 1024;

/// How a message body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body follows (a request without one; `HEAD`, 1xx, 204, 304 responses).
    None,
    /// Exactly this many bytes (`Content-Length`).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// Why a message body was not written whole.
#[derive(Debug, thiserror::Error)]
pub enum BodyWriteError {
    /// The connection failed.
    #[error("writing the body: {0}")]
    Io(#[from] io::Error),
    /// The body itself failed (its source broke off).
    #[error("the body failed: {0}")]
    Body(BoxError),
    /// The body ran past the `Content-Length` its head announced.
    #[error("the body is longer than its announced {0} bytes")]
    TooLong(u64),
}

/// Writes `body` to `io` after whatever `out` already holds (its head, typically), framed as
/// `framing` says: with [`Framing::None`] the body is not read, with [`Framing::Chunked`] each
/// data frame is a chunk (and the last chunk ends it). Frames gather in `out`, which is written
/// when it fills, when the body must wait for its next frame, and at the end: a head and a
/// small body leave in one write. Trailers and empty frames are skipped. A body longer than its
/// [`Framing::Length`] stops with [`BodyWriteError::TooLong`] before the excess is written.
/// Returns the data bytes written; on an error, `out` may still hold some of them.
pub async fn write_body<I, B>(
    io: &mut I,
    out: &mut BytesMut,
    mut body: Pin<&mut B>,
    framing: Framing,
) -> Result<u64, BodyWriteError>
where
    I: AsyncWrite + Unpin,
    B: http_body::Body<Data = Bytes, Error = BoxError> + ?Sized,
{
    let (chunked, length) = match framing {
        Framing::None => {
            flush(io, out).await?;
            return Ok(0);
        }
        Framing::Length(n) => (false, Some(n)),
        Framing::Chunked => (true, None),
    };
    let mut sent = 0u64;
    loop {
        // Take what the body has now; only when it must wait, send what is buffered first.
        let frame = match std::future::poll_fn(|cx| Poll::Ready(body.as_mut().poll_frame(cx))).await {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                flush(io, out).await?;
                std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await
            }
        };
        let data = match frame {
            None => break,
            Some(Err(e)) => return Err(BodyWriteError::Body(e)),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) if !data.is_empty() => data,
                _ => continue,
            },
        };
        sent += data.len() as u64;
        if let Some(n) = length
            && sent > n
        {
            return Err(BodyWriteError::TooLong(n));
        }
        if chunked {
            // Writing into a `BytesMut` cannot fail.
            let _ = std::fmt::Write::write_fmt(out, format_args!("{:x}\r\n", data.len()));
        }
        if data.len() >= WRITE_CHUNK {
            flush(io, out).await?;
            io.write_all(&data).await?;
        } else {
            out.put_slice(&data);
        }
        if chunked {
            out.put_slice(b"\r\n");
        }
        if out.len() >= WRITE_CHUNK {
            flush(io, out).await?;
        }
    }
    if chunked {
        out.put_slice(b"0\r\n\r\n");
    }
    flush(io, out).await?;
    Ok(sent)
}

/// Writes all of `out` to `io` and empties it, keeping its memory.
pub async fn flush<I: AsyncWrite + Unpin>(io: &mut I, out: &mut BytesMut) -> io::Result<()> {
    if !out.is_empty() {
        io.write_all(out).await?;
        out.clear();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    /// Two data frames, "hello" and " world!".
    fn two_frames() -> impl http_body::Body<Data = Bytes, Error = BoxError> + Unpin {
        let frames = [b"hello".as_slice(), b" world!"].map(|data| Ok(http_body::Frame::data(Bytes::from_static(data))));
        http_body_util::StreamBody::new(futures_util::stream::iter(frames)).map_err(|e: BoxError| e)
    }

    #[tokio::test]
    async fn bodies_follow_their_head_in_one_write_framed_and_held_to_their_length() {
        let (mut wire, mut out) = (Vec::new(), BytesMut::from(&b"HEAD\r\n"[..]));
        let sent =
            write_body(&mut wire, &mut out, Pin::new(&mut two_frames()), Framing::Chunked).await.expect("written");
        assert_eq!(sent, 12);
        assert_eq!(wire, b"HEAD\r\n5\r\nhello\r\n7\r\n world!\r\n0\r\n\r\n");
        assert!(out.is_empty(), "everything went out");

        let (mut wire, mut out) = (Vec::new(), BytesMut::new());
        let sent =
            write_body(&mut wire, &mut out, Pin::new(&mut two_frames()), Framing::Length(12)).await.expect("written");
        assert_eq!((sent, wire.as_slice()), (12, &b"hello world!"[..]));

        let (mut wire, mut out) = (Vec::new(), BytesMut::new());
        let err = write_body(&mut wire, &mut out, Pin::new(&mut two_frames()), Framing::Length(8)).await;
        assert!(matches!(err, Err(BodyWriteError::TooLong(8))), "{err:?}");
        assert_eq!((wire.as_slice(), &out[..]), (&b""[..], &b"hello"[..]), "the excess frame was not written");
    }
}

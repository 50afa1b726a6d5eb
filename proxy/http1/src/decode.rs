//! Reading a message body: by length, in chunks, or until the peer closes.

use bytes::{Bytes, BytesMut};

use crate::ResponseError;

/// Body framing state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyDecoder {
    /// This many bytes remain.
    Length(u64),
    /// Chunked transfer coding.
    Chunked(Chunked),
    /// Everything until the peer closes.
    Eof,
}

/// States of the chunked decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunked {
    /// Reading the hex size.
    Size {
        /// Size so far.
        size: u64,
        /// Hex digits read.
        digits: u8,
    },
    /// Skipping a chunk extension up to CR LF; holds the size.
    Extension(u64),
    /// Expecting LF after the size line; holds the size.
    SizeLf(u64),
    /// Inside chunk data; bytes left.
    Data(u64),
    /// Expecting CR after chunk data.
    DataCr,
    /// Expecting LF after chunk data.
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    /// Inside a trailer line.
    TrailerLine,
    /// Expecting LF of the final empty line.
    FinalLf,
    /// Finished.
    Done,
}

/// What decoding the buffered bytes produced.
#[derive(Debug)]
pub enum Decoded {
    /// A piece of body.
    Data(Bytes),
    /// The body is complete.
    Done,
    /// More bytes must be read.
    NeedMore,
}

impl BodyDecoder {
    /// Takes the next piece of body from `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, ResponseError> {
        match self {
            Self::Length(0) => Ok(Decoded::Done),
            Self::Length(left) => {
                if buf.is_empty() {
                    return Ok(Decoded::NeedMore);
                }
                let n = (*left).min(buf.len() as u64);
                *left -= n;
                Ok(Decoded::Data(buf.split_to(n as usize).freeze()))
            }
            Self::Eof => {
                if buf.is_empty() {
                    Ok(Decoded::NeedMore)
                } else {
                    Ok(Decoded::Data(buf.split().freeze()))
                }
            }
            Self::Chunked(state) => decode_chunked(state, buf),
        }
    }

    /// Whether the body ends when the peer closes (so a close is not an error).
    pub fn ends_at_eof(&self) -> bool {
        matches!(self, Self::Eof)
    }
}

fn invalid(what: &str) -> ResponseError {
    ResponseError::Invalid(format!("bad chunked encoding: {what}"))
}

fn decode_chunked(state: &mut Chunked, buf: &mut BytesMut) -> Result<Decoded, ResponseError> {
    loop {
        if let Chunked::Done = state {
            return Ok(Decoded::Done);
        }
        if let Chunked::Data(left) = state {
            if buf.is_empty() {
                return Ok(Decoded::NeedMore);
            }
            let n = (*left).min(buf.len() as u64);
            *left -= n;
            if *left == 0 {
                *state = Chunked::DataCr;
            }
            return Ok(Decoded::Data(buf.split_to(n as usize).freeze()));
        }
        let Some(&byte) = buf.first() else { return Ok(Decoded::NeedMore) };
        let _ = buf.split_to(1);
        *state = match (*state, byte) {
            (Chunked::Size { size, digits }, b) if b.is_ascii_hexdigit() => {
                if digits >= 16 {
                    return Err(invalid("chunk size too large"));
                }
                let d = (b as char).to_digit(16).unwrap_or(0) as u64;
                Chunked::Size { size: size * 16 + d, digits: digits + 1 }
            }
            (Chunked::Size { size, digits }, b'\r') if digits > 0 => Chunked::SizeLf(size),
            (Chunked::Size { size, digits }, b';' | b' ' | b'\t') if digits > 0 => Chunked::Extension(size),
            (Chunked::Size { .. }, _) => return Err(invalid("chunk size")),
            (Chunked::Extension(size), b'\r') => Chunked::SizeLf(size),
            (Chunked::Extension(size), _) => Chunked::Extension(size),
            (Chunked::SizeLf(0), b'\n') => Chunked::TrailerStart,
            (Chunked::SizeLf(size), b'\n') => Chunked::Data(size),
            (Chunked::DataCr, b'\r') => Chunked::DataLf,
            (Chunked::DataLf, b'\n') => Chunked::Size { size: 0, digits: 0 },
            (Chunked::TrailerStart, b'\r') => Chunked::FinalLf,
            (Chunked::TrailerStart | Chunked::TrailerLine, b'\n') => Chunked::TrailerStart,
            (Chunked::TrailerStart | Chunked::TrailerLine, _) => Chunked::TrailerLine,
            (Chunked::FinalLf, b'\n') => Chunked::Done,
            _ => return Err(invalid("framing")),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(mut decoder: BodyDecoder, wire: &[u8], step: usize) -> Result<(Vec<u8>, bool), ResponseError> {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in wire.chunks(step) {
            buf.extend_from_slice(piece);
            loop {
                match decoder.decode(&mut buf)? {
                    Decoded::Data(d) => out.extend_from_slice(&d),
                    Decoded::Done => return Ok((out, true)),
                    Decoded::NeedMore => break,
                }
            }
        }
        Ok((out, false))
    }

    #[test]
    fn chunked_bodies_decode_across_any_split() {
        let wire = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: 1\r\n\r\n";
        for step in 1..wire.len() {
            let (body, done) =
                decode_all(BodyDecoder::Chunked(Chunked::Size { size: 0, digits: 0 }), wire, step).expect("valid");
            assert_eq!(body, b"hello world", "step {step}");
            assert!(done);
        }
    }

    #[test]
    fn malformed_chunks_are_errors() {
        let bad = decode_all(BodyDecoder::Chunked(Chunked::Size { size: 0, digits: 0 }), b"zz\r\n", 4);
        assert!(bad.is_err());
        let huge = decode_all(BodyDecoder::Chunked(Chunked::Size { size: 0, digits: 0 }), b"11111111111111111\r\n", 32);
        assert!(huge.is_err());
    }

    #[test]
    fn length_bodies_stop_at_the_length() {
        let (body, done) = decode_all(BodyDecoder::Length(5), b"helloEXTRA", 3).expect("valid");
        assert_eq!(body, b"hello");
        assert!(done);
    }
}

//! Length-prefixed postcard frames.
//!
//! A frame is `varint(len) ++ body`, where the varint is unsigned LEB128 of at most
//! [`MAX_VARINT_LEN`] bytes and `body` is `len` bytes of postcard. Decoders take untrusted
//! bytes, never panic, and check `len` against the caller's limit before anything is allocated.

use serde::{de::DeserializeOwned, Serialize};

/// The longest length prefix accepted: 10 bytes is enough for any `u64`.
pub const MAX_VARINT_LEN: usize = 10;

/// Why a frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// More bytes are needed; `needed` is a lower bound of how many more.
    #[error("incomplete frame: at least {needed} more bytes needed")]
    Incomplete {
        /// At least this many more bytes.
        needed: usize,
    },
    /// The length prefix exceeds the receiver's limit.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// The announced length.
        len: u64,
        /// The receiver's limit.
        max: u64,
    },
    /// The bytes are not a valid frame (bad varint, bad postcard, trailing bytes).
    #[error("invalid frame: {0}")]
    Invalid(String),
}

/// Why a message could not be encoded.
#[derive(Debug, thiserror::Error)]
#[error("cannot encode message: {0}")]
pub struct EncodeError(#[from] postcard::Error);

/// Appends `value` as LEB128 to `out`.
pub fn put_varint(mut value: u64, out: &mut Vec<u8>) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// How many bytes [`put_varint`] writes for `value`.
pub fn varint_len(value: u64) -> usize {
    // 7 bits per byte; zero still takes one byte.
    (64 - (value | 1).leading_zeros() as usize).div_ceil(7)
}

/// Reads a LEB128 varint from the start of `buf`: `Ok(Some((value, bytes_used)))`, `Ok(None)`
/// if `buf` ends inside it.
///
/// # Errors
/// [`DecodeError::Invalid`] if it is longer than [`MAX_VARINT_LEN`] or overflows a `u64`.
pub fn get_varint(buf: &[u8]) -> Result<Option<(u64, usize)>, DecodeError> {
    let mut value: u64 = 0;
    for (i, &byte) in buf.iter().enumerate().take(MAX_VARINT_LEN) {
        let bits = u64::from(byte & 0x7f);
        let shift = 7 * i as u32;
        if shift == 63 && bits > 1 {
            return Err(DecodeError::Invalid("varint overflows u64".into()));
        }
        value |= bits << shift;
        if byte & 0x80 == 0 {
            return Ok(Some((value, i + 1)));
        }
    }
    if buf.len() >= MAX_VARINT_LEN {
        return Err(DecodeError::Invalid("varint too long".into()));
    }
    Ok(None)
}

/// Reads a frame's length prefix: `Ok(Some((header_len, body_len)))` once the whole prefix is
/// in `buf`, `Ok(None)` before.
///
/// # Errors
/// [`DecodeError::TooLarge`] when `body_len > max_len`, [`DecodeError::Invalid`] for a bad
/// varint.
pub fn frame_len(buf: &[u8], max_len: usize) -> Result<Option<(usize, usize)>, DecodeError> {
    match get_varint(buf)? {
        None => Ok(None),
        Some((len, used)) => {
            if len > max_len as u64 {
                return Err(DecodeError::TooLarge {
                    len,
                    max: max_len as u64,
                });
            }
            // Cannot truncate: len <= max_len, a usize.
            Ok(Some((used, len as usize)))
        }
    }
}

/// Appends the frame for `msg` to `out`.
///
/// # Errors
/// Only if serde refuses the value (postcard cannot fail on these message types).
pub fn encode<T: Serialize>(msg: &T, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    // Most frames (stream item headers) are tiny: serialise on the stack, no allocation.
    let mut small = [0u8; 64];
    match postcard::to_slice(msg, &mut small) {
        Ok(body) => {
            put_varint(body.len() as u64, out);
            out.extend_from_slice(body);
        }
        Err(postcard::Error::SerializeBufferFull) => {
            // Larger: measured, then written straight into `out` (no second buffer, no copy).
            let start = out.len();
            let body_len = postcard::experimental::serialized_size(msg)?;
            out.reserve(MAX_VARINT_LEN + body_len);
            put_varint(body_len as u64, out);
            if let Err(e) = postcard::to_io(msg, &mut *out) {
                out.truncate(start);
                return Err(e.into());
            }
        }
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

/// The frame for `msg` as a new vector, in one allocation of exactly its size.
///
/// # Errors
/// As [`encode`].
pub fn encode_to_vec<T: Serialize>(msg: &T) -> Result<Vec<u8>, EncodeError> {
    measured(msg, true)
}

/// `msg` in postcard without a length prefix (subroutine arguments, state files), in one
/// allocation of exactly its size.
///
/// # Errors
/// As [`encode`].
pub fn body_to_vec<T: Serialize + ?Sized>(msg: &T) -> Result<Vec<u8>, EncodeError> {
    measured(msg, false)
}

/// `msg` in a vector of exactly its size, allocated once: a larger one is measured first (a
/// pass that writes nothing), so the vector never grows while postcard writes.
fn measured<T: Serialize + ?Sized>(msg: &T, prefixed: bool) -> Result<Vec<u8>, EncodeError> {
    // Small ones (most requests and arguments) are written once on the stack and copied:
    // measuring costs as much as writing.
    let mut small = [0u8; 128];
    match postcard::to_slice(msg, &mut small) {
        Ok(body) => {
            let prefix = if prefixed {
                varint_len(body.len() as u64)
            } else {
                0
            };
            let mut out = Vec::with_capacity(prefix + body.len());
            if prefixed {
                put_varint(body.len() as u64, &mut out);
            }
            out.extend_from_slice(body);
            return Ok(out);
        }
        Err(postcard::Error::SerializeBufferFull) => {}
        Err(e) => return Err(e.into()),
    }
    let body_len = postcard::experimental::serialized_size(msg)?;
    // Exact, so that `Bytes::from(vec)` takes the buffer over instead of allocating again.
    let prefix = if prefixed {
        varint_len(body_len as u64)
    } else {
        0
    };
    let mut out = Vec::with_capacity(prefix + body_len);
    if prefixed {
        put_varint(body_len as u64, &mut out);
    }
    Ok(postcard::to_extend(msg, out)?)
}

/// Decodes one frame from the start of `buf`, returning the message and the bytes used.
///
/// # Errors
/// [`DecodeError::Incomplete`] when `buf` holds less than a frame; [`DecodeError::TooLarge`]
/// when the prefix exceeds `max_len`; [`DecodeError::Invalid`] for a bad body, including
/// trailing bytes inside the frame.
pub fn decode<T: DeserializeOwned>(buf: &[u8], max_len: usize) -> Result<(T, usize), DecodeError> {
    let Some((header, len)) = frame_len(buf, max_len)? else {
        return Err(DecodeError::Incomplete { needed: 1 });
    };
    let available = buf.len() - header;
    if available < len {
        return Err(DecodeError::Incomplete {
            needed: len - available,
        });
    }
    let value = decode_body(&buf[header..header + len])?;
    Ok((value, header + len))
}

/// Decodes a frame body (without its length prefix); the whole body must be used.
///
/// # Errors
/// [`DecodeError::Invalid`] for a bad body or trailing bytes.
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, DecodeError> {
    let (value, rest) =
        postcard::take_from_bytes(body).map_err(|e| DecodeError::Invalid(e.to_string()))?;
    if !rest.is_empty() {
        return Err(DecodeError::Invalid(format!(
            "{} trailing bytes",
            rest.len()
        )));
    }
    Ok(value)
}

#[cfg(test)]
mod tests;

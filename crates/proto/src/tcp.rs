//! The TLS-over-TCP transport's stream headers and control messages.
//!
//! Over TCP, operations run on yamux streams, and yamux lacks what QUIC gives each stream:
//! a stop and a reset with a code, and a connection close with a code and a reason. Every
//! yamux stream therefore starts with one byte naming its kind:
//!
//! | first byte | then | QUIC's equivalent |
//! |---|---|---|
//! | `B` | the operation's frames, as over QUIC | a bidirectional stream |
//! | `C` | `code: u32` big-endian, then the reason (≤ [`MAX_REASON`] bytes) | `CONNECTION_CLOSE` |
//! | `S` | `stream: u32`, `code: u32` | `STOP_SENDING` |
//! | `R` | `stream: u32`, `code: u32` | `RESET_STREAM` |
//!
//! A control message has a stream of its own, which its sender finishes after the message.
//! It travels on the same TCP connection, after what was written before it.
//!
//! ```
//! use quicswarm_proto::{tcp::Control, ErrorCode};
//!
//! let stop = Control::Stop { stream: 7, code: ErrorCode::Cancelled };
//! let bytes = stop.encode();
//! assert_eq!(bytes, [b'S', 0, 0, 0, 7, 0, 0, 0, 10]);
//! assert_eq!(Control::decode(&bytes), Ok(stop));
//! ```

use crate::ErrorCode;

/// The first byte of a stream that carries an operation.
pub const OPERATION: u8 = b'B';
const CLOSE: u8 = b'C';
const STOP: u8 = b'S';
const RESET: u8 = b'R';

/// The longest close reason sent or read; longer ones are cut.
pub const MAX_REASON: usize = 1024;

/// The most bytes a control stream may hold, its kind byte included: a reader takes no more.
pub const MAX_CONTROL_LEN: usize = 1 + 4 + MAX_REASON;

/// A control message: what QUIC says in frames, said on a stream of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Close the connection with a code and a reason.
    Close {
        /// The application's code.
        code: ErrorCode,
        /// Why, for people (cut to [`MAX_REASON`] bytes).
        reason: Vec<u8>,
    },
    /// The sender stopped reading stream `stream`: the receiver's writes to it fail.
    Stop {
        /// The yamux stream id.
        stream: u32,
        /// Why.
        code: ErrorCode,
    },
    /// The sender abandoned its side of stream `stream`: the receiver's reads fail.
    Reset {
        /// The yamux stream id.
        stream: u32,
        /// Why.
        code: ErrorCode,
    },
}

/// Why a control stream did not decode. The receiver drops the stream and carries on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// The stream was empty.
    #[error("empty control stream")]
    Empty,
    /// The first byte names no kind of stream we know.
    #[error("unknown stream kind {0:#04x}")]
    UnknownKind(u8),
    /// The stream is an operation, not a control message.
    #[error("an operation stream, not a control message")]
    Operation,
    /// The message is shorter or longer than its kind needs.
    #[error("control message of {len} bytes is malformed")]
    BadLength {
        /// The bytes received, kind byte included.
        len: usize,
    },
}

impl Control {
    /// The message's bytes, kind byte first. A reason over [`MAX_REASON`] is cut.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Self::Close { code, reason } => {
                let reason = &reason[..reason.len().min(MAX_REASON)];
                let mut out = Vec::with_capacity(5 + reason.len());
                out.push(CLOSE);
                out.extend_from_slice(&code.to_u32().to_be_bytes());
                out.extend_from_slice(reason);
                out
            }
            Self::Stop { stream, code } => stream_message(STOP, *stream, *code),
            Self::Reset { stream, code } => stream_message(RESET, *stream, *code),
        }
    }

    /// Decodes a whole control stream, kind byte first.
    ///
    /// # Errors
    /// A [`ControlError`] for an empty, unknown, operation or malformed stream.
    pub fn decode(msg: &[u8]) -> Result<Self, ControlError> {
        let (&kind, body) = msg.split_first().ok_or(ControlError::Empty)?;
        let bad = ControlError::BadLength { len: msg.len() };
        let word = |at: usize| -> u32 {
            u32::from_be_bytes([body[at], body[at + 1], body[at + 2], body[at + 3]])
        };
        match kind {
            OPERATION => Err(ControlError::Operation),
            CLOSE if (4..=4 + MAX_REASON).contains(&body.len()) => Ok(Self::Close {
                code: ErrorCode::from(word(0)),
                reason: body[4..].to_vec(),
            }),
            STOP | RESET if body.len() == 8 => {
                let (stream, code) = (word(0), ErrorCode::from(word(4)));
                Ok(if kind == STOP {
                    Self::Stop { stream, code }
                } else {
                    Self::Reset { stream, code }
                })
            }
            CLOSE | STOP | RESET => Err(bad),
            other => Err(ControlError::UnknownKind(other)),
        }
    }

    /// Whether this closes the connection.
    pub fn is_close(&self) -> bool {
        matches!(self, Self::Close { .. })
    }
}

fn stream_message(kind: u8, stream: u32, code: ErrorCode) -> Vec<u8> {
    let mut out = Vec::with_capacity(9);
    out.push(kind);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(&code.to_u32().to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_vectors() {
        let cases: [(Control, &[u8]); 3] = [
            (
                Control::Close {
                    code: ErrorCode::PoolFull,
                    reason: b"full".to_vec(),
                },
                &[b'C', 0, 0, 0, 3, b'f', b'u', b'l', b'l'],
            ),
            (
                Control::Stop {
                    stream: 0x0102_0304,
                    code: ErrorCode::Timeout,
                },
                &[b'S', 1, 2, 3, 4, 0, 0, 0, 16],
            ),
            (
                Control::Reset {
                    stream: u32::MAX,
                    code: ErrorCode::Superseded,
                },
                &[b'R', 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 20],
            ),
        ];
        for (msg, bytes) in cases {
            assert_eq!(msg.encode(), bytes, "{msg:?}");
            assert_eq!(Control::decode(bytes).as_ref(), Ok(&msg));
        }
        // A close with no reason is whole.
        assert_eq!(
            Control::decode(&[b'C', 0, 0, 0, 0]),
            Ok(Control::Close {
                code: ErrorCode::NoError,
                reason: vec![]
            })
        );
    }

    #[test]
    fn a_long_reason_is_cut_and_a_longer_message_refused() {
        let close = Control::Close {
            code: ErrorCode::Internal,
            reason: vec![b'x'; MAX_REASON + 10],
        };
        let bytes = close.encode();
        assert_eq!(bytes.len(), MAX_CONTROL_LEN);
        assert!(matches!(
            Control::decode(&bytes),
            Ok(Control::Close { reason, .. }) if reason.len() == MAX_REASON
        ));
        let mut over = bytes;
        over.push(b'x');
        assert_eq!(
            Control::decode(&over),
            Err(ControlError::BadLength {
                len: MAX_CONTROL_LEN + 1
            })
        );
    }

    #[test]
    fn malformed_streams_are_refused() {
        assert_eq!(Control::decode(&[]), Err(ControlError::Empty));
        assert_eq!(Control::decode(&[b'B', 1]), Err(ControlError::Operation));
        assert_eq!(Control::decode(b"Z"), Err(ControlError::UnknownKind(b'Z')));
        for cut in [&[b'S', 0, 0, 0, 1, 0, 0, 0][..], b"R", &[b'C', 0, 0, 0]] {
            assert_eq!(
                Control::decode(cut),
                Err(ControlError::BadLength { len: cut.len() })
            );
        }
        assert!(Control::decode(&[b'S', 0, 0, 0, 1, 0, 0, 0, 10, 0]).is_err());
        // A code no version of ours sends decodes as `Internal`, not as a failure.
        assert_eq!(
            Control::decode(&[b'R', 0, 0, 0, 1, 0, 0, 0x77, 0x77]),
            Ok(Control::Reset {
                stream: 1,
                code: ErrorCode::Internal
            })
        );
    }
}

use std::fmt;

use serde::{Deserialize, Serialize};

/// Every code used on the wire: in [`ErrorReply`](crate::ErrorReply), in stream resets and
/// `STOP_SENDING`, and in connection closes. One namespace, so a code means the same wherever
/// it appears.
///
/// | code | name | meaning |
/// |---|---|---|
/// | 0 | `NoError` | normal close |
/// | 1 | `Protocol` | the peer sent something this version does not allow |
/// | 2 | `FrameTooLarge` | a frame or item was over the receiver's limit |
/// | 3 | `PoolFull` | the gateway's handler pool is full |
/// | 4 | `UnknownSubroutine` | no subroutine of that name (and kind) is registered |
/// | 5 | `BadArgs` | the arguments did not decode into the subroutine's type |
/// | 6 | `SubroutineFailed` | the subroutine returned an error |
/// | 7 | `SubroutinePanicked` | the subroutine panicked |
/// | 8 | `PermissionDenied` | the gateway does not allow this request |
/// | 9 | `ShuttingDown` | the gateway is closing |
/// | 10 | `Cancelled` | the requester gave up (client abort) |
/// | 11 | `TooEarly` | not replay-safe; re-send after the handshake |
/// | 12 | `Internal` | the gateway hit an unexpected error |
/// | 13 | `UnsupportedVersion` | the `Hello` carried another protocol version |
/// | 14 | `WrongKind` | the subroutine exists but is of another kind |
/// | 15 | `HandlerClosed` | the handler was closed on request |
/// | 16 | `Timeout` | the peer took too long |
/// | 17 | `NotFound` | no such root, file or folder |
/// | 18 | `Integrity` | received bytes did not match their BLAKE3 hash |
/// | 19 | `DiskFull` | the receiver ran out of space |
/// | 20 | `Superseded` | a newer item replaced this one before it was delivered |
/// | 21 | `Unsupported` | not available on this transport (a QUIC-only feature over TCP) |
/// | 22 | `LimitExceeded` | a count or size in the request is over the receiver's limit |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "u32", into = "u32")]
#[repr(u32)]
#[non_exhaustive]
pub enum ErrorCode {
    /// Normal close.
    NoError = 0,
    /// The peer violated the protocol.
    Protocol = 1,
    /// A frame or item exceeded the receiver's limit.
    FrameTooLarge = 2,
    /// The gateway's handler pool is full.
    PoolFull = 3,
    /// No subroutine of that name is registered.
    UnknownSubroutine = 4,
    /// The arguments did not decode into the subroutine's argument type.
    BadArgs = 5,
    /// The subroutine returned an error.
    SubroutineFailed = 6,
    /// The subroutine panicked.
    SubroutinePanicked = 7,
    /// The gateway does not allow this request.
    PermissionDenied = 8,
    /// The gateway is shutting down.
    ShuttingDown = 9,
    /// The requester cancelled the operation.
    Cancelled = 10,
    /// Not replay-safe, arrived as 0-RTT early data: re-send after the handshake.
    TooEarly = 11,
    /// An unexpected error inside the gateway.
    Internal = 12,
    /// The peer speaks another protocol version.
    UnsupportedVersion = 13,
    /// The subroutine exists but is of another kind (stream, batch or sink).
    WrongKind = 14,
    /// The handler was closed on request.
    HandlerClosed = 15,
    /// The peer took too long.
    Timeout = 16,
    /// No such root, file or folder.
    NotFound = 17,
    /// Received bytes did not match their BLAKE3 hash.
    Integrity = 18,
    /// The receiver ran out of space.
    DiskFull = 19,
    /// A newer item replaced this one before it was delivered (`Latest` delivery).
    Superseded = 20,
    /// Not available on this transport: a QUIC-only feature (0-RTT, datagrams, latest-value
    /// delivery) asked over TLS-over-TCP.
    Unsupported = 21,
    /// A count or size in the request (items, paths, ranges, a pattern's length, a declared
    /// size) is over the receiver's limit; the message names the limit.
    LimitExceeded = 22,
}

impl ErrorCode {
    /// Every code, in numeric order.
    pub const ALL: [Self; 23] = [
        Self::NoError,
        Self::Protocol,
        Self::FrameTooLarge,
        Self::PoolFull,
        Self::UnknownSubroutine,
        Self::BadArgs,
        Self::SubroutineFailed,
        Self::SubroutinePanicked,
        Self::PermissionDenied,
        Self::ShuttingDown,
        Self::Cancelled,
        Self::TooEarly,
        Self::Internal,
        Self::UnsupportedVersion,
        Self::WrongKind,
        Self::HandlerClosed,
        Self::Timeout,
        Self::NotFound,
        Self::Integrity,
        Self::DiskFull,
        Self::Superseded,
        Self::Unsupported,
        Self::LimitExceeded,
    ];

    /// The code as sent on the wire.
    pub const fn to_u32(self) -> u32 {
        self as u32
    }

    /// The code for a wire value, or `None` if this version does not know it.
    pub fn from_u32(value: u32) -> Option<Self> {
        Self::ALL.get(value as usize).copied()
    }

    /// The code a peer sent in a stream reset, a stop or a connection close (QUIC carries
    /// those as 62-bit varints). A value this version does not know, from a newer peer or
    /// beyond 32 bits, reads as [`Internal`](Self::Internal): the one place codes are parsed.
    pub fn from_wire(value: u64) -> Self {
        u32::try_from(value).map_or(Self::Internal, Self::from)
    }

    /// A short human-readable reason.
    pub const fn reason(self) -> &'static str {
        match self {
            Self::NoError => "no error",
            Self::Protocol => "protocol violation",
            Self::FrameTooLarge => "frame too large",
            Self::PoolFull => "handler pool full",
            Self::UnknownSubroutine => "unknown subroutine",
            Self::BadArgs => "bad arguments",
            Self::SubroutineFailed => "subroutine failed",
            Self::SubroutinePanicked => "subroutine panicked",
            Self::PermissionDenied => "permission denied",
            Self::ShuttingDown => "gateway shutting down",
            Self::Cancelled => "cancelled",
            Self::TooEarly => "too early (not replay-safe in 0-RTT)",
            Self::Internal => "internal error",
            Self::UnsupportedVersion => "unsupported protocol version",
            Self::WrongKind => "wrong subroutine kind",
            Self::HandlerClosed => "handler closed",
            Self::Timeout => "timed out",
            Self::NotFound => "not found",
            Self::Integrity => "integrity check failed",
            Self::DiskFull => "disk full",
            Self::Superseded => "superseded by a newer item",
            Self::Unsupported => "not supported on this transport",
            Self::LimitExceeded => "limit exceeded",
        }
    }
}

/// Unknown values (from a newer peer) read as [`ErrorCode::Internal`] rather than failing
/// the whole frame.
impl From<u32> for ErrorCode {
    fn from(value: u32) -> Self {
        Self::from_u32(value).unwrap_or(Self::Internal)
    }
}

impl From<ErrorCode> for u32 {
    fn from(code: ErrorCode) -> Self {
        code.to_u32()
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_match_positions() {
        for (i, code) in ErrorCode::ALL.iter().enumerate() {
            assert_eq!(code.to_u32() as usize, i);
            assert_eq!(ErrorCode::from_u32(i as u32), Some(*code));
        }
        assert_eq!(ErrorCode::from_u32(ErrorCode::ALL.len() as u32), None);
        assert_eq!(ErrorCode::from(9999), ErrorCode::Internal);
    }

    #[test]
    fn wire_values_from_resets_and_closes() {
        for (wire, code) in [
            (0, ErrorCode::NoError),
            (3, ErrorCode::PoolFull),
            (9, ErrorCode::ShuttingDown),
            (22, ErrorCode::LimitExceeded),
            (23, ErrorCode::Internal),
            (u64::from(u32::MAX), ErrorCode::Internal),
            (1 << 40, ErrorCode::Internal),
            ((1 << 62) - 1, ErrorCode::Internal),
        ] {
            assert_eq!(ErrorCode::from_wire(wire), code, "{wire}");
        }
    }
}

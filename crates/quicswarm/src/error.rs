//! Error types: one per kind of operation.

use std::{io, net::SocketAddr, time::Duration};

use quicswarm_proto::{codec::DecodeError, ErrorCode, ErrorReply};

use crate::{
    tls::{Fingerprint, TlsError},
    transport::{Disconnect, ReadError, WriteError},
};

/// Why [`Controller::get_client`](crate::Controller::get_client) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The gateway's handler pool is full.
    #[error("gateway {gateway}: handler pool full ({size} of {size} in use)")]
    PoolFull {
        /// The gateway.
        gateway: SocketAddr,
        /// The pool's size.
        size: u32,
    },
    /// The gateway presented a certificate other than the pinned one. Nothing was re-pinned.
    #[error(
        "gateway {gateway} presented certificate {actual}, but {expected} is pinned for it; \
         if the gateway's key really changed, remove its line from the known-gateways file"
    )]
    FingerprintMismatch {
        /// The gateway as dialled.
        gateway: String,
        /// The pinned fingerprint.
        expected: Fingerprint,
        /// The one it presented.
        actual: Fingerprint,
    },
    /// The gateway refused the pair for another reason.
    #[error("gateway {gateway} refused the connection: {code}: {message}")]
    Refused {
        /// The gateway.
        gateway: SocketAddr,
        /// Why.
        code: ErrorCode,
        /// Detail.
        message: String,
    },
    /// The address could not be parsed or resolved.
    #[error("cannot resolve gateway address {addr:?}: {reason}")]
    Address {
        /// The address as given.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The QUIC connection could not be started (a bad address or server name, say).
    #[error("cannot connect to {gateway}: {reason}")]
    Connect {
        /// The gateway.
        gateway: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The handshake or the hello exchange failed on the connection.
    #[error("connection to {gateway} failed: {source}")]
    Connection {
        /// The gateway.
        gateway: SocketAddr,
        /// How the connection ended (TLS failures show up as a transport error).
        source: Disconnect,
    },
    /// No answer within the connect timeout.
    #[error("connecting to {gateway} timed out after {after:?}")]
    Timeout {
        /// The gateway.
        gateway: SocketAddr,
        /// The timeout.
        after: Duration,
    },
    /// The gateway answered something this version does not understand.
    #[error("gateway {gateway} broke the protocol: {detail}")]
    Protocol {
        /// The gateway.
        gateway: SocketAddr,
        /// What was wrong.
        detail: String,
    },
    /// Loading or storing trust material failed.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Socket setup failed.
    #[error("socket error: {0}")]
    Io(#[from] io::Error),
    /// The TCP connection or its TLS handshake failed (TLS-over-TCP transport).
    #[error("cannot connect to tcp://{gateway}: {source}")]
    Tcp {
        /// The gateway.
        gateway: SocketAddr,
        /// The OS or TLS error.
        source: io::Error,
    },
    /// A QUIC-only feature was asked of another transport (0-RTT over TCP, say).
    #[error("{feature} is not available over {transport}")]
    Unsupported {
        /// What was asked.
        feature: &'static str,
        /// The transport.
        transport: crate::TransportKind,
    },
}

/// Why an operation on a [`Client`](crate::Client) failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// No subroutine of that name is registered on the gateway.
    #[error("unknown subroutine: {0}")]
    UnknownSubroutine(String),
    /// The subroutine exists but is of another kind (stream, batch or sink).
    #[error("wrong subroutine kind: {0}")]
    WrongKind(String),
    /// The arguments did not decode into the subroutine's argument type.
    #[error("bad arguments: {0}")]
    BadArgs(String),
    /// The subroutine returned an error; the message is its text.
    #[error("subroutine failed: {0}")]
    Failed(String),
    /// The subroutine panicked; the gateway carried on.
    #[error("subroutine panicked: {0}")]
    Panicked(String),
    /// The gateway does not allow this request.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// A frame or item was over a limit (ours or the gateway's).
    #[error("too large: {0}")]
    TooLarge(String),
    /// A count or size in the request (items, paths, ranges, a pattern's length) or in the
    /// gateway's answer is over a limit; the message names it. Nothing was done for it.
    #[error("limit exceeded: {0}")]
    LimitExceeded(String),
    /// The gateway is shutting down.
    #[error("gateway shutting down")]
    ShuttingDown,
    /// Sent as 0-RTT early data and refused there (not replay-safe, or early data rejected).
    /// Requests are re-sent after the handshake automatically; this is seen only if that
    /// failed too.
    #[error("refused in 0-RTT early data")]
    TooEarly,
    /// The operation was cancelled by the other side.
    #[error("cancelled: {0}")]
    Cancelled(String),
    /// No answer within the configured timeout.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The connection was lost while the operation ran: it may or may not have taken effect.
    #[error("connection lost: {0}")]
    ConnectionLost(Disconnect),
    /// Another typed failure reported by the gateway.
    #[error("{code}: {message}")]
    Remote {
        /// The code.
        code: ErrorCode,
        /// The detail.
        message: String,
    },
    /// The peer broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// Reading local input (for example a file given to `send_reader`) failed.
    #[error("local I/O error: {0}")]
    Io(String),
    /// A QUIC-only feature (datagram or latest-value delivery) asked over TLS-over-TCP.
    #[error("not supported on this transport: {0}")]
    Unsupported(String),
}

impl CallError {
    /// The wire code this error corresponds to.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::UnknownSubroutine(_) => ErrorCode::UnknownSubroutine,
            Self::WrongKind(_) => ErrorCode::WrongKind,
            Self::BadArgs(_) => ErrorCode::BadArgs,
            Self::Failed(_) => ErrorCode::SubroutineFailed,
            Self::Panicked(_) => ErrorCode::SubroutinePanicked,
            Self::PermissionDenied(_) => ErrorCode::PermissionDenied,
            Self::TooLarge(_) => ErrorCode::FrameTooLarge,
            Self::LimitExceeded(_) => ErrorCode::LimitExceeded,
            Self::ShuttingDown => ErrorCode::ShuttingDown,
            Self::TooEarly => ErrorCode::TooEarly,
            Self::Cancelled(_) => ErrorCode::Cancelled,
            Self::Timeout(_) => ErrorCode::Timeout,
            Self::ConnectionLost(_) | Self::Io(_) => ErrorCode::Internal,
            Self::Remote { code, .. } => *code,
            Self::Protocol(_) => ErrorCode::Protocol,
            Self::Unsupported(_) => ErrorCode::Unsupported,
        }
    }
}

impl From<ErrorReply> for CallError {
    fn from(reply: ErrorReply) -> Self {
        let m = reply.message;
        match reply.code {
            ErrorCode::UnknownSubroutine => Self::UnknownSubroutine(m),
            ErrorCode::WrongKind => Self::WrongKind(m),
            ErrorCode::BadArgs => Self::BadArgs(m),
            ErrorCode::SubroutineFailed => Self::Failed(m),
            ErrorCode::SubroutinePanicked => Self::Panicked(m),
            ErrorCode::PermissionDenied => Self::PermissionDenied(m),
            ErrorCode::FrameTooLarge => Self::TooLarge(m),
            ErrorCode::LimitExceeded => Self::LimitExceeded(m),
            ErrorCode::ShuttingDown => Self::ShuttingDown,
            ErrorCode::TooEarly => Self::TooEarly,
            ErrorCode::Cancelled => Self::Cancelled(m),
            ErrorCode::Protocol => Self::Protocol(m),
            ErrorCode::Unsupported => Self::Unsupported(m),
            code => Self::Remote { code, message: m },
        }
    }
}

impl From<Disconnect> for CallError {
    fn from(e: Disconnect) -> Self {
        match e {
            Disconnect::Closed {
                code: ErrorCode::ShuttingDown,
                ..
            } => Self::ShuttingDown,
            other => Self::ConnectionLost(other),
        }
    }
}

impl From<WriteError> for CallError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Stopped(code) => {
                Self::from(ErrorReply::new(code, "the gateway stopped reading"))
            }
            WriteError::ConnectionLost(c) => c.into(),
            WriteError::ZeroRttRejected => Self::TooEarly,
            // A write stall timeout of our own ran out (clients set none on their writes
            // today; gateways do): a timeout.
            WriteError::Stalled(after) => Self::Timeout(after),
            other @ WriteError::ClosedStream => Self::Protocol(other.to_string()),
        }
    }
}

impl From<ReadError> for CallError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Reset(code) => {
                Self::from(ErrorReply::new(code, "the gateway reset the stream"))
            }
            ReadError::ConnectionLost(c) => c.into(),
            ReadError::ZeroRttRejected => Self::TooEarly,
            // Our own limit on waiting for the gateway's bytes (a transfer that stopped
            // moving): a timeout, as a call that got no answer.
            ReadError::Stalled(after) => Self::Timeout(after),
            other @ ReadError::ClosedStream => Self::Protocol(other.to_string()),
        }
    }
}

impl From<DecodeError> for CallError {
    fn from(e: DecodeError) -> Self {
        match e {
            DecodeError::TooLarge { .. } => Self::TooLarge(e.to_string()),
            other => Self::Protocol(other.to_string()),
        }
    }
}

impl From<CallError> for io::Error {
    fn from(e: CallError) -> Self {
        let kind = match e {
            CallError::Timeout(_) => io::ErrorKind::TimedOut,
            CallError::ConnectionLost(_) => io::ErrorKind::ConnectionAborted,
            CallError::PermissionDenied(_) => io::ErrorKind::PermissionDenied,
            CallError::BadArgs(_) => io::ErrorKind::InvalidInput,
            _ => io::ErrorKind::Other,
        };
        Self::new(kind, e)
    }
}

/// Why a gateway could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// The UDP socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// The identity could not be loaded or generated.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gateway_shutting_down_is_its_own_error_not_a_lost_connection() {
        let shutting = Disconnect::Closed {
            code: ErrorCode::ShuttingDown,
            reason: String::new(),
        };
        assert!(matches!(CallError::from(shutting), CallError::ShuttingDown));
        assert!(matches!(
            CallError::from(Disconnect::TimedOut),
            CallError::ConnectionLost(Disconnect::TimedOut)
        ));
        assert!(matches!(
            CallError::from(ReadError::Reset(ErrorCode::PermissionDenied)),
            CallError::PermissionDenied(_)
        ));
    }
}

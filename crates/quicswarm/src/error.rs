//! Error types: one per kind of operation.

use std::{io, net::SocketAddr, time::Duration};

use quicswarm_proto::{codec::DecodeError, ErrorCode, ErrorReply};

use crate::tls::{Fingerprint, TlsError};

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

/// Why a connection ended. The crate's own type, so that a quinn upgrade leaves the public API
/// as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Disconnect {
    /// The peer closed it, with a code and a reason.
    #[error("closed by the peer: {code}: {reason}")]
    Closed {
        /// The peer's code.
        code: ErrorCode,
        /// The peer's reason.
        reason: String,
    },
    /// The transport failed: a protocol or TLS error, a refused connection (the text says
    /// which), or no common QUIC version.
    #[error("transport error: {0}")]
    Transport(String),
    /// The peer no longer knew the connection (a stateless reset: it restarted, say).
    #[error("reset by the peer")]
    Reset,
    /// Nothing was heard from the peer within the idle timeout.
    #[error("timed out: nothing heard within the idle timeout")]
    TimedOut,
    /// Closed on this side.
    #[error("closed locally")]
    Local,
}

impl Disconnect {
    /// quinn's reason in ours.
    pub(crate) fn from_quinn(e: &quinn::ConnectionError) -> Self {
        use quinn::ConnectionError as E;
        match e {
            E::ApplicationClosed(close) => Self::Closed {
                code: ErrorCode::from_wire(close.error_code.into_inner()),
                reason: String::from_utf8_lossy(&close.reason).into_owned(),
            },
            E::Reset => Self::Reset,
            E::TimedOut => Self::TimedOut,
            E::LocallyClosed => Self::Local,
            other => Self::Transport(other.to_string()),
        }
    }
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

    /// The error for a code received in a reset, stop or close.
    pub(crate) fn from_code(code: u64, context: &str) -> Self {
        Self::from(ErrorReply::new(ErrorCode::from_wire(code), context))
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

impl From<quinn::ConnectionError> for CallError {
    fn from(e: quinn::ConnectionError) -> Self {
        match Disconnect::from_quinn(&e) {
            Disconnect::Closed {
                code: ErrorCode::ShuttingDown,
                ..
            } => Self::ShuttingDown,
            other => Self::ConnectionLost(other),
        }
    }
}

impl From<quinn::WriteError> for CallError {
    fn from(e: quinn::WriteError) -> Self {
        match e {
            quinn::WriteError::Stopped(code) => {
                Self::from_code(code.into_inner(), "the gateway stopped reading")
            }
            quinn::WriteError::ConnectionLost(c) => c.into(),
            quinn::WriteError::ZeroRttRejected => Self::TooEarly,
            other => Self::Protocol(other.to_string()),
        }
    }
}

impl From<quinn::ReadError> for CallError {
    fn from(e: quinn::ReadError) -> Self {
        match e {
            quinn::ReadError::Reset(code) => {
                Self::from_code(code.into_inner(), "the gateway reset the stream")
            }
            quinn::ReadError::ConnectionLost(c) => c.into(),
            quinn::ReadError::ZeroRttRejected => Self::TooEarly,
            other => Self::Protocol(other.to_string()),
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
    fn quinn_reasons_become_ours() {
        let closed = quinn::ConnectionError::ApplicationClosed(quinn::ApplicationClose {
            error_code: quinn::VarInt::from_u32(ErrorCode::PoolFull.to_u32()),
            reason: bytes::Bytes::from_static(b"handler pool full"),
        });
        assert_eq!(
            Disconnect::from_quinn(&closed),
            Disconnect::Closed {
                code: ErrorCode::PoolFull,
                reason: "handler pool full".into()
            }
        );
        for (quinn, ours) in [
            (quinn::ConnectionError::TimedOut, Disconnect::TimedOut),
            (quinn::ConnectionError::Reset, Disconnect::Reset),
            (quinn::ConnectionError::LocallyClosed, Disconnect::Local),
        ] {
            assert_eq!(Disconnect::from_quinn(&quinn), ours);
        }
        assert!(matches!(
            Disconnect::from_quinn(&quinn::ConnectionError::VersionMismatch),
            Disconnect::Transport(_)
        ));
        // A gateway shutting down is its own error, not a lost connection.
        let shutting = quinn::ConnectionError::ApplicationClosed(quinn::ApplicationClose {
            error_code: quinn::VarInt::from_u32(ErrorCode::ShuttingDown.to_u32()),
            reason: bytes::Bytes::new(),
        });
        assert!(matches!(CallError::from(shutting), CallError::ShuttingDown));
    }
}

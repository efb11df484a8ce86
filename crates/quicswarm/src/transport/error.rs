//! The transport's errors, in the crate's own types.
//!
//! quinn's errors are translated here, once; the TCP transport makes these directly instead
//! of imitating quinn's. Everything above `transport/` sees only these and
//! `Disconnect`, so a quinn upgrade touches this file and `mod.rs`, not the operations.

use quicswarm_proto::ErrorCode;

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

/// Why a write to a stream failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum WriteError {
    /// The peer stopped reading, with its code.
    #[error("stopped by the peer: {0}")]
    Stopped(ErrorCode),
    /// The connection ended.
    #[error("connection lost: {0}")]
    ConnectionLost(Disconnect),
    /// Sent as 0-RTT early data, which the peer refused.
    #[error("0-RTT early data refused")]
    ZeroRttRejected,
    /// The stream was already finished or reset on this side.
    #[error("the stream was already finished or reset")]
    ClosedStream,
    /// The peer took none of what was written for this side's stall timeout (see
    /// [`SendStream::set_stall_timeout`](super::SendStream::set_stall_timeout)); the stream
    /// was reset with `Timeout`.
    #[error("the peer took nothing for {0:?}")]
    Stalled(std::time::Duration),
}

/// Why a read from a stream failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ReadError {
    /// The peer reset its sending side, with its code.
    #[error("reset by the peer: {0}")]
    Reset(ErrorCode),
    /// The connection ended.
    #[error("connection lost: {0}")]
    ConnectionLost(Disconnect),
    /// Sent as 0-RTT early data, which the peer refused.
    #[error("0-RTT early data refused")]
    ZeroRttRejected,
    /// The stream was already stopped on this side.
    #[error("the stream was already stopped")]
    ClosedStream,
    /// Nothing arrived for this side's stall timeout (see
    /// [`RecvStream::set_stall_timeout`](super::RecvStream::set_stall_timeout)); the peer was
    /// told to stop with `Timeout`.
    #[error("nothing arrived for {0:?}")]
    Stalled(std::time::Duration),
}

/// Why a datagram could not be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DatagramError {
    /// The peer, the configuration or the transport (TCP) has no datagrams.
    #[error("datagrams are not available on this connection")]
    Unsupported,
    /// Larger than the path allows.
    #[error("larger than the path's datagram size")]
    TooLarge,
    /// The connection ended.
    #[error("connection lost: {0}")]
    ConnectionLost(Disconnect),
}

/// A code as quinn carries it.
pub(crate) fn quic_code(code: ErrorCode) -> quinn::VarInt {
    quinn::VarInt::from_u32(code.to_u32())
}

fn our_code(code: quinn::VarInt) -> ErrorCode {
    ErrorCode::from_wire(code.into_inner())
}

impl From<&quinn::ConnectionError> for Disconnect {
    fn from(e: &quinn::ConnectionError) -> Self {
        use quinn::ConnectionError as E;
        match e {
            E::ApplicationClosed(close) => Self::Closed {
                code: our_code(close.error_code),
                reason: String::from_utf8_lossy(&close.reason).into_owned(),
            },
            E::Reset => Self::Reset,
            E::TimedOut => Self::TimedOut,
            E::LocallyClosed => Self::Local,
            other => Self::Transport(other.to_string()),
        }
    }
}

impl From<quinn::ConnectionError> for Disconnect {
    fn from(e: quinn::ConnectionError) -> Self {
        Self::from(&e)
    }
}

impl From<quinn::WriteError> for WriteError {
    fn from(e: quinn::WriteError) -> Self {
        use quinn::WriteError as E;
        match e {
            E::Stopped(code) => Self::Stopped(our_code(code)),
            E::ConnectionLost(c) => Self::ConnectionLost(c.into()),
            E::ZeroRttRejected => Self::ZeroRttRejected,
            E::ClosedStream => Self::ClosedStream,
        }
    }
}

impl From<quinn::ReadError> for ReadError {
    fn from(e: quinn::ReadError) -> Self {
        use quinn::ReadError as E;
        match e {
            E::Reset(code) => Self::Reset(our_code(code)),
            E::ConnectionLost(c) => Self::ConnectionLost(c.into()),
            E::ZeroRttRejected => Self::ZeroRttRejected,
            // We only read in order; an unordered read after an ordered one cannot happen.
            E::ClosedStream | E::IllegalOrderedRead => Self::ClosedStream,
        }
    }
}

impl From<quinn::StoppedError> for WriteError {
    fn from(e: quinn::StoppedError) -> Self {
        match e {
            quinn::StoppedError::ConnectionLost(c) => Self::ConnectionLost(c.into()),
            quinn::StoppedError::ZeroRttRejected => Self::ZeroRttRejected,
        }
    }
}

impl From<quinn::SendDatagramError> for DatagramError {
    fn from(e: quinn::SendDatagramError) -> Self {
        use quinn::SendDatagramError as E;
        match e {
            E::UnsupportedByPeer | E::Disabled => Self::Unsupported,
            E::TooLarge => Self::TooLarge,
            E::ConnectionLost(c) => Self::ConnectionLost(c.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quinn_close_reasons_map_onto_ours() {
        let closed = quinn::ConnectionError::ApplicationClosed(quinn::ApplicationClose {
            error_code: quic_code(ErrorCode::PoolFull),
            reason: bytes::Bytes::from_static(b"full"),
        });
        assert_eq!(
            Disconnect::from(&closed),
            Disconnect::Closed {
                code: ErrorCode::PoolFull,
                reason: "full".into()
            }
        );
        for (quinn, ours) in [
            (quinn::ConnectionError::TimedOut, Disconnect::TimedOut),
            (quinn::ConnectionError::Reset, Disconnect::Reset),
            (quinn::ConnectionError::LocallyClosed, Disconnect::Local),
        ] {
            assert_eq!(Disconnect::from(&quinn), ours);
        }
        assert!(matches!(
            Disconnect::from(&quinn::ConnectionError::VersionMismatch),
            Disconnect::Transport(_)
        ));
    }

    #[test]
    fn stream_codes_survive_the_translation() {
        let code = quic_code(ErrorCode::Superseded);
        assert_eq!(
            WriteError::from(quinn::WriteError::Stopped(code)),
            WriteError::Stopped(ErrorCode::Superseded)
        );
        assert_eq!(
            ReadError::from(quinn::ReadError::Reset(code)),
            ReadError::Reset(ErrorCode::Superseded)
        );
        // A code no version of ours sends arrives as `Internal`.
        let unknown = quinn::VarInt::from_u32(0x7777);
        assert_eq!(
            ReadError::from(quinn::ReadError::Reset(unknown)),
            ReadError::Reset(ErrorCode::Internal)
        );
        assert_eq!(
            ReadError::from(quinn::ReadError::ConnectionLost(
                quinn::ConnectionError::TimedOut
            )),
            ReadError::ConnectionLost(Disconnect::TimedOut)
        );
    }
}

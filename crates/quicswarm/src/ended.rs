//! Why a gateway operation ended before its answer was complete. Each write and read keeps
//! its reason here (instead of dropping it into `()`), and the operation logs it once, where
//! it ends.

use quicswarm_proto::ErrorReply;

/// Why an operation ended early.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Ended {
    /// Writing to the client failed: it stopped or reset the stream, stalled, or the
    /// connection went.
    #[error("writing to the client: {0}")]
    Write(#[from] crate::transport::WriteError),
    /// Reading from the client failed or broke the framing.
    #[error("reading from the client: {0}")]
    Read(#[from] crate::io::FrameError),
    /// Opening a stream to the client failed: the connection went.
    #[error("opening a stream: {0}")]
    Open(#[from] crate::transport::Disconnect),
    /// The client stopped the stream: it wants no more.
    #[error("the client stopped the stream")]
    Stopped,
    /// The connection closed before the stream could be opened.
    #[error("the connection closed")]
    Closed,
    /// A blocking task of the operation panicked or was cancelled.
    #[error("a blocking task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// The gateway reset the stream mid-answer (a budget refused, a file shrank).
    #[error("reset mid-answer: {}: {}", .0.code, .0.message)]
    Reset(ErrorReply),
}

/// What an operation's steps return.
pub(crate) type Reply = Result<(), Ended>;

//! Errors of file transfers.

use std::{io, path::PathBuf};

use quicswarm_proto::{path::PathError, ErrorCode, ErrorReply};

use crate::CallError;

/// Why a file transfer (or one file of it) failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum TransferError {
    /// A path is not a portable relative path (`..`, absolute, drive, UNC, NUL, …). Nothing
    /// was written for it.
    #[error("refused path {path:?}: {reason}")]
    UnsafePath {
        /// The path as received or given.
        path: String,
        /// The rule it breaks.
        reason: PathError,
    },
    /// A path leads through a symlink or a non-folder, or is not a regular file.
    #[error("refused path {path:?}: {reason}")]
    Refused {
        /// The path.
        path: String,
        /// Why.
        reason: String,
    },
    /// The glob or regex of a selection does not compile.
    #[error("bad selection: {0}")]
    BadSelector(String),
    /// A count or size (of a request, a listing, a declared file) is over a limit: refused
    /// before anything was allocated or planned for it.
    #[error("{limit}: {asked} is over the limit of {max}")]
    LimitExceeded {
        /// Which limit, in words (`"get items"`, `"regex length"`, `"ranges per file"`).
        limit: &'static str,
        /// The limit.
        max: u64,
        /// What was asked or declared.
        asked: u64,
    },
    /// Received bytes do not match the sender's BLAKE3: nothing was stored under the name.
    #[error("integrity check failed for {path:?}: {detail}")]
    Integrity {
        /// The file.
        path: String,
        /// What did not match.
        detail: String,
    },
    /// The disk is full: the partial file was removed.
    #[error("disk full while writing {path}")]
    DiskFull {
        /// The file.
        path: PathBuf,
    },
    /// A local file operation failed.
    #[error("{action} {path}: {message}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The OS error.
        message: String,
        /// Its kind.
        kind: io::ErrorKind,
    },
    /// The gateway refused or failed the request.
    #[error(transparent)]
    Call(#[from] CallError),
    /// Every connection of the swarm was lost with work left.
    #[error("every connection was lost; {left} units of work left undone")]
    AllConnectionsLost {
        /// Units not done.
        left: usize,
    },
    /// The transfer was cancelled before this file was complete; what arrived stays in its
    /// part file for the next run to resume.
    #[error("the transfer was cancelled")]
    Cancelled,
    /// Some files failed; the others were transferred.
    #[error("{} of {total} files failed; first: {}: {}", failed.len(), failed[0].0, failed[0].1)]
    Partial {
        /// Files in the job.
        total: usize,
        /// `(path, error)` for each failed file.
        failed: Vec<(String, Self)>,
    },
}

impl TransferError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |e| {
            if e.kind() == io::ErrorKind::StorageFull {
                Self::DiskFull { path }
            } else {
                Self::Io {
                    action,
                    path,
                    message: e.to_string(),
                    kind: e.kind(),
                }
            }
        }
    }

    /// A [`LimitExceeded`](Self::LimitExceeded) error when `asked > max`.
    pub(crate) fn check(limit: &'static str, asked: u64, max: u64) -> Result<(), Self> {
        if asked > max {
            Err(Self::LimitExceeded { limit, max, asked })
        } else {
            Ok(())
        }
    }

    pub(crate) fn unsafe_path(path: &str, reason: PathError) -> Self {
        Self::UnsafePath {
            path: path.to_string(),
            reason,
        }
    }

    /// The wire form, for a gateway answering a peer.
    pub(crate) fn to_reply(&self) -> ErrorReply {
        let code = match self {
            Self::UnsafePath { .. } | Self::Refused { .. } => ErrorCode::PermissionDenied,
            Self::BadSelector(_) => ErrorCode::BadArgs,
            Self::LimitExceeded { .. } => ErrorCode::LimitExceeded,
            Self::Integrity { .. } => ErrorCode::Integrity,
            Self::DiskFull { .. } => ErrorCode::DiskFull,
            Self::Io {
                kind: io::ErrorKind::NotFound,
                ..
            } => ErrorCode::NotFound,
            Self::Call(e) => e.code(),
            Self::Cancelled => ErrorCode::Cancelled,
            _ => ErrorCode::Internal,
        };
        ErrorReply::new(code, self.to_string())
    }
}

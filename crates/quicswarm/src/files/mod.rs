//! Swarm file transfer: download from a gateway's roots and upload into its upload folder,
//! spread over several connections.
//!
//! # How a job runs
//! 1. **Plan.** A download lists the remote files with their BLAKE3 hashes; an upload hashes
//!    the local files and asks the gateway what it lacks. Files already present with the
//!    right size and hash are skipped; a big file interrupted earlier resumes from the ranges
//!    that were received and verified.
//! 2. **Cut.** Small files are grouped into batches (one request, no round trip or
//!    acknowledgement per file); files over the range size are cut into ranges.
//! 3. **Swarm.** Every connection runs several workers that take units from one shared queue,
//!    so no connection idles while work is left. A unit whose connection dies goes back to
//!    the queue and another connection finishes it.
//! 4. **Store.** The receiver checks each file (and each range) against the sender's BLAKE3,
//!    writes it under a temporary name in its final folder, sets mode and mtime, syncs (in
//!    batches) and renames. A big file's whole hash is merged from its ranges' (BLAKE3 hashes
//!    a tree, and each range is a subtree of it) and checked before the rename. A failed or
//!    interrupted transfer never leaves a partial file under the final name. Ranges are
//!    received into reused page-aligned buffers and, on Linux, written with direct I/O: the
//!    receiver syncs everything and keeps nothing cached, so copying each byte into the page
//!    cache (the costliest step of a big download measured here) buys nothing.
//!
//! # Example
//! ```no_run
//! # async fn demo(controller: quicswarm::Controller) -> Result<(), Box<dyn std::error::Error>> {
//! use quicswarm::files::{Selector, Swarm, TransferOptions};
//!
//! let swarm = Swarm::connect(&controller, "robot.local:1857", 4).await?;
//! let selector = Selector { glob: Some("**/*.log".into()), ..Selector::all() };
//! let summary = swarm.download("logs", &selector, "backup/", &TransferOptions::default()).await?;
//! println!("{} files, {} bytes in {:.2} s", summary.files, summary.bytes, summary.seconds);
//! # Ok(()) }
//! ```

mod buffers;
mod dest;
mod error;
mod job;
mod ops;
mod pieces;
pub(crate) mod select;
pub(crate) mod serve;
pub(crate) mod source;
mod swarm;
mod tree;
mod units;

pub use self::swarm::{Swarm, MAX_JOB_RANGES};
pub use error::TransferError;
pub use ops::Listing;
pub use quicswarm_proto::transfer::{FileEntry, Mtime, Need, Selector};
pub use tree::range_hash;

use std::{path::PathBuf, sync::Arc, time::Duration};

use quicswarm_proto::transfer::{DEFAULT_BATCH_BYTES, DEFAULT_BATCH_FILES, DEFAULT_RANGE_SIZE};

/// Progress of a running transfer.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct Progress {
    /// Files stored so far.
    pub files_done: u64,
    /// Files to store in this run (skipped ones excluded).
    pub files_total: u64,
    /// Bytes stored so far.
    pub bytes_done: u64,
    /// Bytes to store in this run.
    pub bytes_total: u64,
    /// Files skipped because they were already present and verified.
    pub skipped: u64,
    /// Time since the transfer started.
    pub elapsed: Duration,
}

impl Progress {
    /// Bytes per second so far.
    pub fn rate(&self) -> f64 {
        self.bytes_done as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// A progress callback: called after every file or range stored, and once at the end. Keep
/// it cheap (update a counter or a progress bar); it runs on the transfer's tasks.
pub type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;

/// Tuning of a transfer; the defaults suit most jobs.
#[derive(Clone)]
#[non_exhaustive]
pub struct TransferOptions {
    /// Files larger than this travel in ranges of this size. Default 4 MiB, at most 16 MiB
    /// ([`MAX_RANGE_SIZE`](quicswarm_proto::limits::MAX_RANGE_SIZE)); an upload's must be a
    /// power of two from 64 KiB ([`check_range_size`](quicswarm_proto::transfer::check_range_size)).
    pub range_size: u64,
    /// Most bytes in one batch of small files. Default 2 MiB.
    pub batch_bytes: u64,
    /// Most files in one batch. Default 256.
    pub batch_files: usize,
    /// Requests in flight per connection. Default 4.
    pub streams_per_client: usize,
    /// Called with progress.
    pub progress: Option<ProgressFn>,
}

impl Default for TransferOptions {
    fn default() -> Self {
        Self {
            range_size: DEFAULT_RANGE_SIZE,
            batch_bytes: DEFAULT_BATCH_BYTES,
            batch_files: DEFAULT_BATCH_FILES,
            streams_per_client: 4,
            progress: None,
        }
    }
}

impl std::fmt::Debug for TransferOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransferOptions")
            .field("range_size", &self.range_size)
            .field("batch_bytes", &self.batch_bytes)
            .field("batch_files", &self.batch_files)
            .field("streams_per_client", &self.streams_per_client)
            .finish_non_exhaustive()
    }
}

/// What a finished transfer did.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct TransferSummary {
    /// Files moved in this run.
    pub files: u64,
    /// Bytes moved in this run.
    pub bytes: u64,
    /// Files skipped: already present with the right size and hash.
    pub skipped: u64,
    /// Wall time.
    pub seconds: f64,
    /// Every file now present and verified at the destination (moved or skipped), by path.
    pub verified: Vec<String>,
}

impl TransferSummary {
    /// Files per second moved.
    pub fn files_per_s(&self) -> f64 {
        self.files as f64 / self.seconds.max(1e-9)
    }

    /// Megabytes (10^6) per second moved.
    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.seconds.max(1e-9)
    }
}

pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, TransferError> + Send + 'static,
) -> Result<T, TransferError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(join_error(&e)))
}

/// A blocking file task that panicked or was cancelled.
fn join_error(e: &tokio::task::JoinError) -> TransferError {
    TransferError::Io {
        action: "running",
        path: PathBuf::new(),
        message: e.to_string(),
        kind: std::io::ErrorKind::Other,
    }
}

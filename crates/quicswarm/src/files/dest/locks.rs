//! One lock per part file, shared by every transfer writing it, with the range hashes a run
//! verified; and the stop flag that ends a cancelled transfer's writes.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, OnceLock, PoisonError,
    },
};

use quicswarm_proto::transfer::Hash;

/// Ends a transfer's writes to part files when dropped: see [`Destination::stop_guard`].
#[derive(Debug)]
pub(crate) struct StopOnDrop(pub(super) Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Serialises work on one part file across concurrent requests (ranges of the same file may
/// arrive on several connections at once), and remembers the ranges this process verified.
#[derive(Debug, Default)]
pub(crate) struct FileLocks {
    map: Arc<PartLocks>,
    /// Per part file, the hash of each range this process received and checked: with all of
    /// them the whole-file hash is merged instead of read again (see [`super::tree`]).
    /// Ranges from an earlier run are not in it (they may not have reached the disk before a
    /// crash): their file is hashed whole.
    verified: Mutex<HashMap<PathBuf, Vec<Option<Hash>>>>,
}

/// One lock per part file.
type PartLocks = Mutex<HashMap<PathBuf, Arc<Mutex<()>>>>;

/// Ranges whose hashes are remembered at once, over all part files (2 MiB of them: 256 GiB in
/// 4 MiB ranges); beyond, the memory is dropped and those files are hashed whole at the end
/// (slower, never wrong). Bounds what interrupted transfers that never return leave behind.
const MAX_TRACKED_RANGES: usize = 1 << 16;

impl FileLocks {
    /// For one download: its part files' locks are the ones every download of this process
    /// shares (a new run of a cancelled download must wait for the old run's last write to
    /// its part file); the verified ranges are its own.
    pub(crate) fn for_download() -> Arc<Self> {
        static SHARED: OnceLock<Arc<PartLocks>> = OnceLock::new();
        Arc::new(Self {
            map: SHARED.get_or_init(Arc::default).clone(),
            verified: Mutex::default(),
        })
    }

    pub(super) fn get(&self, path: &Path) -> Arc<Mutex<()>> {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        // Forget locks nobody holds, so the map does not grow with every file ever written.
        map.retain(|_, lock| Arc::strong_count(lock) > 1);
        map.entry(path.to_path_buf()).or_default().clone()
    }

    pub(super) fn verified(&self, part: &Path, count: usize, index: usize, hash: Hash) {
        if count > MAX_TRACKED_RANGES {
            return;
        }
        let mut map = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
        if !map.contains_key(part) {
            let held: usize = map.values().map(Vec::len).sum();
            if held + count > MAX_TRACKED_RANGES {
                map.clear();
            }
        }
        let ranges = map
            .entry(part.to_path_buf())
            .or_insert_with(|| vec![None; count]);
        if let Some(slot) = ranges.get_mut(index) {
            *slot = Some(hash);
        }
    }

    /// The verified range hashes of `part`, if this process verified every one.
    pub(super) fn take_verified(&self, part: &Path) -> Option<Vec<Hash>> {
        let ranges = self
            .verified
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(part)?;
        ranges.into_iter().collect()
    }

    pub(super) fn forget(&self, part: &Path) {
        self.verified
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(part);
    }
}

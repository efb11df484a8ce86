//! The receiving side of a transfer, shared by downloads (the client writes) and uploads (the
//! gateway writes). Blocking: call from `spawn_blocking`.
//!
//! Every file is written under a temporary name in its final folder, checked against the
//! sender's BLAKE3, given its mode and mtime, synced, and only then renamed: a reader never
//! sees a half-written file under the final name. Small files are synced in batches (one
//! `syncfs` per batch on Linux). A big file arrives in ranges into a `.qs-part` file beside a
//! `.qs-state` file that records the ranges received and verified, so an interrupted
//! transfer resumes where it stopped. Ranges are not synced one by one: the assembled file is
//! checked against the sender's whole-file hash (and synced) before it is renamed, so a range
//! lost in a power cut costs a new transfer of that file, never a corrupt file.
//!
//! `mod.rs` has the [`Destination`]; `part.rs` the part and state files of big files;
//! `commit.rs` the temporary files and batched syncs of whole files; `direct.rs` how a range
//! is written (past the page cache where it can); `locks.rs` what concurrent transfers of one
//! file share.

mod commit;
mod direct;
mod locks;
mod part;

pub(crate) use self::locks::{FileLocks, StopOnDrop};

use self::{
    commit::{sync_dir, Committer, TempFile},
    part::{
        check_range, open_part, part_paths, ranges_of, read_state, write_state, PartState,
        MAX_RUNS_PER_FILE,
    },
};
use std::{
    collections::HashMap,
    fs::{self, File, OpenOptions},
    io::Write,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, PoisonError,
    },
};

use bytes::Bytes;
use quicswarm_proto::{
    path,
    transfer::{ByteRange, FileEntry, Hash, Need},
};

use super::TransferError;

/// A folder files are received into.
#[derive(Debug, Clone)]
pub(crate) struct Destination {
    root: PathBuf,
    locks: Arc<FileLocks>,
    /// Folders already checked (no symlink on the way) or created: each is checked once.
    /// `true` for a folder this destination created, so empty when made: a fresh download
    /// then needs no look for existing files in it (one `stat` less per file).
    dirs: Arc<Mutex<HashMap<PathBuf, bool>>>,
    committer: Arc<Committer>,
    /// Set once the transfer writing here is over (see [`Destination::stop_guard`]).
    stopped: Arc<AtomicBool>,
}

/// One whole file to store.
#[derive(Debug)]
pub(crate) struct WholeFile {
    pub(crate) entry: FileEntry,
    pub(crate) data: Bytes,
    /// The sender's BLAKE3 of `data`.
    pub(crate) hash: Hash,
}

impl Destination {
    /// `root` is created if missing.
    pub(crate) fn new(root: PathBuf, locks: Arc<FileLocks>) -> Self {
        Self {
            root,
            locks,
            dirs: Arc::default(),
            committer: Arc::default(),
            stopped: Arc::default(),
        }
    }

    /// A guard for the transfer writing here, held for as long as it runs. A cancelled
    /// transfer's future is dropped while its `spawn_blocking` writes run on; once the guard
    /// is dropped, such a straggler writes nothing more to a part file. Without it, one that
    /// came in after a new run of the transfer had completed the file would make its part
    /// file again, beside the finished file.
    pub(crate) fn stop_guard(&self) -> StopOnDrop {
        StopOnDrop(self.stopped.clone())
    }

    /// The final path of `rel`, after checking it is portable and that no existing folder
    /// on the way is a symlink or a file; missing folders are created. The file itself is not
    /// inspected: a rename replaces a symlink rather than following it.
    pub(crate) fn target(&self, rel: &str) -> Result<PathBuf, TransferError> {
        self.place(rel).map(|(target, _)| target)
    }

    /// [`target`](Self::target), and whether its folder was created by this destination.
    fn place(&self, rel: &str) -> Result<(PathBuf, bool), TransferError> {
        let parts = path::validate(rel).map_err(|e| TransferError::unsafe_path(rel, e))?;
        let (name, folders) = parts
            .split_last()
            .ok_or_else(|| TransferError::unsafe_path(rel, path::PathError::Empty))?;
        let mut dir = self.root.clone();
        for folder in folders {
            dir.push(folder);
        }
        let known = self.known_dir(&dir);
        let fresh = match known {
            Some(fresh) => fresh,
            None => self.check_dirs(rel, folders)?,
        };
        Ok((dir.join(name), fresh))
    }

    fn known_dir(&self, dir: &Path) -> Option<bool> {
        self.dirs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(dir)
            .copied()
    }

    fn remember_dir(&self, dir: &Path, fresh: bool) {
        self.dirs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(dir.to_path_buf(), fresh);
    }

    /// Checks (and creates) the root and each folder of `folders` below it, remembering each.
    /// Returns whether the last one was created here.
    fn check_dirs(&self, rel: &str, folders: &[&str]) -> Result<bool, TransferError> {
        let mut dir = self.root.clone();
        let mut fresh = match self.known_dir(&dir) {
            Some(fresh) => fresh,
            None => {
                let fresh = !dir.exists();
                fs::create_dir_all(&dir).map_err(TransferError::io("creating", &dir))?;
                self.remember_dir(&dir, fresh);
                fresh
            }
        };
        for folder in folders {
            dir.push(folder);
            if let Some(known) = self.known_dir(&dir) {
                fresh = known;
                continue;
            }
            fresh = match fs::symlink_metadata(&dir) {
                Ok(meta) if meta.is_dir() => false,
                Ok(_) => {
                    return Err(TransferError::Refused {
                        path: rel.to_string(),
                        reason: format!("{} is a symlink or not a folder", dir.display()),
                    })
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    match fs::create_dir(&dir) {
                        Ok(()) => true,
                        // Another writer made it meanwhile: check what it is.
                        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                            let meta = fs::symlink_metadata(&dir)
                                .map_err(TransferError::io("inspecting", &dir))?;
                            if !meta.is_dir() {
                                return Err(TransferError::Refused {
                                    path: rel.to_string(),
                                    reason: format!(
                                        "{} is a symlink or not a folder",
                                        dir.display()
                                    ),
                                });
                            }
                            false
                        }
                        Err(e) => return Err(TransferError::io("creating", &dir)(e)),
                    }
                }
                Err(e) => return Err(TransferError::io("inspecting", &dir)(e)),
            };
            self.remember_dir(&dir, fresh);
        }
        Ok(fresh)
    }

    /// The final path of `rel`, refusing an existing entry there that is not a regular file.
    fn existing_target(&self, rel: &str) -> Result<(PathBuf, Option<fs::Metadata>), TransferError> {
        let (target, fresh) = self.place(rel)?;
        if fresh {
            // Made empty by this destination, which checks before it writes: nothing there.
            return Ok((target, None));
        }
        match fs::symlink_metadata(&target) {
            Ok(meta) if meta.is_file() => Ok((target, Some(meta))),
            Ok(_) => Err(TransferError::Refused {
                path: rel.to_string(),
                reason: format!("{} exists and is not a regular file", target.display()),
            }),
            Err(_) => Ok((target, None)),
        }
    }

    /// Whether a regular file of `entry`'s size is already at its place.
    pub(crate) fn has_same_size(&self, entry: &FileEntry) -> bool {
        matches!(self.existing_target(&entry.path), Ok((_, Some(meta))) if meta.len() == entry.size)
    }

    /// What is still needed of `entry` (which must carry its hash).
    pub(crate) fn need(&self, entry: &FileEntry, range_size: u64) -> Result<Need, TransferError> {
        let (target, existing) = self.existing_target(entry.path.as_str())?;
        if let (Some(meta), Some(hash)) = (existing, entry.hash) {
            if meta.len() == entry.size && hash_file(&target)? == hash {
                return Ok(Need::Skip);
            }
        }
        if !quicswarm_proto::transfer::is_ranged(entry.size, range_size) {
            return Ok(Need::Whole);
        }
        let Some(hash) = entry.hash else {
            return Ok(Need::Whole);
        };
        let count = ranges_of(entry, range_size)?;
        let (part, state_path) = part_paths(&target, &hash);
        let fresh = PartState::fresh(entry.size, range_size, hash, count);
        let missing = match read_state(&state_path) {
            Some(state) if state.fits(&fresh) && part.exists() => state.missing(count),
            _ => return Ok(Need::Whole),
        };
        if missing.len() > MAX_RUNS_PER_FILE {
            return Ok(Need::Whole);
        }
        Ok(Need::Ranges(missing))
    }

    /// Stores whole files: temp files, verify, metadata, then a group commit (one sync for
    /// every batch waiting, renames). Returns one result per file, in order.
    pub(crate) fn write_batch(&self, files: Vec<WholeFile>) -> Vec<Result<(), TransferError>> {
        let staged: Vec<_> = files.iter().map(|f| self.stage(f)).collect();
        self.committer.commit(staged)
    }

    fn stage(&self, file: &WholeFile) -> Result<(TempFile, PathBuf), TransferError> {
        let target = self.target(&file.entry.path)?;
        let actual = blake3::hash(&file.data);
        if actual.as_bytes() != &file.hash {
            return Err(TransferError::Integrity {
                path: file.entry.path.clone(),
                detail: format!(
                    "received {} bytes hashing to {actual}, sender said {}",
                    file.data.len(),
                    hex(&file.hash)
                ),
            });
        }
        if file.entry.hash.is_some_and(|h| h != file.hash)
            || file.data.len() as u64 != file.entry.size
        {
            return Err(TransferError::Integrity {
                path: file.entry.path.clone(),
                detail: "content differs from the announced size or hash".into(),
            });
        }
        let (temp, mut f) = TempFile::create(&target)?;
        f.write_all(&file.data)
            .map_err(TransferError::io("writing", temp.path()))?;
        set_metadata(&f, temp.path(), &file.entry)?;
        Ok((temp, target))
    }

    /// Out of space while receiving ranges: keep no partial file around.
    fn failed_range(&self, target: &Path, whole: &Hash, error: TransferError) -> TransferError {
        if matches!(error, TransferError::DiskFull { .. }) {
            self.discard_partial(target, whole);
        }
        error
    }

    /// Removes the part and state files of a ranged transfer of `target`.
    pub(crate) fn discard_partial(&self, target: &Path, whole: &Hash) {
        let (part, state) = part_paths(target, whole);
        self.locks.forget(&part);
        let _ = fs::remove_file(part);
        let _ = fs::remove_file(state);
    }

    /// Removes what a failed ranged download of `entry` left, if its failure was a full disk.
    pub(crate) fn discard_if_disk_full(&self, entry: &FileEntry, error: &TransferError) {
        if let (TransferError::DiskFull { .. }, Some(hash)) = (error, entry.hash) {
            if let Ok(target) = self.target(&entry.path) {
                let lock = self.locks.get(&part_paths(&target, &hash).0);
                let _guard = lock.lock().unwrap_or_else(PoisonError::into_inner);
                self.discard_partial(&target, &hash);
            }
        }
    }

    /// Stores one verified range of a big file; when it was the last one missing, checks the
    /// whole file's hash and moves it to its final name. Returns whether the file is complete.
    pub(crate) fn write_range(
        &self,
        entry: &FileEntry,
        range: ByteRange,
        range_size: u64,
        data: &[u8],
        range_hash: &Hash,
    ) -> Result<bool, TransferError> {
        let (whole, count, actual) = check_range(entry, range, range_size, data, range_hash)?;
        let target = self.target(&entry.path)?;
        let (part, state_path) = part_paths(&target, &whole);
        let lock = self.locks.get(&part);
        let _guard = lock.lock().unwrap_or_else(PoisonError::into_inner);
        // Checked under the lock that a new run takes too: a straggler either finishes
        // before that run looks at the part file, or stops here.
        if self.stopped.load(Ordering::Acquire) {
            return Err(TransferError::Cancelled);
        }
        let fresh = PartState::fresh(entry.size, range_size, whole, count);
        let resumed = read_state(&state_path).filter(|s| s.fits(&fresh) && part.exists());
        let file = open_part(entry, &part, resumed.is_some())?;
        let mut state = resumed.unwrap_or(fresh);
        // Not synced per range: the whole file is checked against the sender's hash before it
        // gets its name, so a range lost in a power cut is caught (and fetched again) then.
        let cached = match direct::write_at(&file, data, range.offset) {
            Ok(cached) => cached as u64,
            Err(e) => {
                return Err(self.failed_range(
                    &target,
                    &whole,
                    TransferError::io("writing", &part)(e),
                ))
            }
        };
        if cached > 0 {
            let end = range.offset + data.len() as u64;
            start_writeback(&file, end - cached, cached);
        }
        self.locks
            .verified(&part, count, range.index as usize, actual);
        state.set_done(range.index as usize);
        if (0..count).all(|i| state.is_done(i)) {
            drop(file);
            self.finish_part(entry, range_size, &whole, &part, &state_path, &target)?;
            return Ok(true);
        }
        write_state(&state_path, &state).map_err(|e| self.failed_range(&target, &whole, e))?;
        Ok(false)
    }

    /// The last range is in: checks the assembled file against the sender's hash, gives it
    /// its mode and mtime, syncs it and renames it into place.
    fn finish_part(
        &self,
        entry: &FileEntry,
        range_size: u64,
        whole: &Hash,
        part: &Path,
        state_path: &Path,
        target: &Path,
    ) -> Result<(), TransferError> {
        // Every range checked by this process: merge their hashes. Otherwise (some came from
        // an earlier run) read the assembled file again.
        let merged = self
            .locks
            .take_verified(part)
            .and_then(|cvs| crate::files::tree::merge(&cvs, range_size, entry.size));
        let actual = match merged {
            Some(hash) => hash,
            None => hash_file(part)?,
        };
        if &actual != whole {
            let _ = fs::remove_file(part);
            let _ = fs::remove_file(state_path);
            return Err(TransferError::Integrity {
                path: entry.path.clone(),
                detail: format!(
                    "assembled file hashes to {}, sender said {}",
                    hex(&actual),
                    hex(whole)
                ),
            });
        }
        let f = OpenOptions::new()
            .write(true)
            .open(part)
            .map_err(TransferError::io("opening", part))?;
        set_metadata(&f, part, entry)?;
        f.sync_all().map_err(TransferError::io("syncing", part))?;
        fs::rename(part, target).map_err(TransferError::io("renaming", part))?;
        let _ = fs::remove_file(state_path);
        if let Some(dir) = target.parent() {
            sync_dir(dir);
        }
        Ok(())
    }
}

/// Asks the kernel to start writing a stored range to disk now, without waiting for it. Left
/// alone, a fast transfer finishes with the whole file still dirty in the page cache (the
/// kernel's background writeback starts only at a tenth of memory), and the sync before the
/// rename then writes all of it while the transfer waits; started range by range, the disk
/// works while later ranges are still on the wire. `POSIX_FADV_DONTNEED` on dirty pages starts
/// their writeback and drops nothing (only clean pages are dropped); it is a hint, so an error
/// is ignored: the sync before the rename is what makes the file durable.
fn start_writeback(file: &File, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        let _ = rustix::fs::fadvise(
            file,
            offset,
            std::num::NonZeroU64::new(len),
            rustix::fs::Advice::DontNeed,
        );
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
}

/// Hard links to a file: a part file with more than one could write into another file.
fn links(meta: &fs::Metadata) -> u64 {
    #[cfg(unix)]
    return std::os::unix::fs::MetadataExt::nlink(meta);
    #[cfg(not(unix))]
    return 1;
}

/// Adds `O_NOFOLLOW`: opening a symlink fails instead of following it.
fn no_follow(options: &mut OpenOptions) {
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(
        options,
        rustix::fs::OFlags::NOFOLLOW.bits() as i32,
    );
    #[cfg(not(unix))]
    let _ = options;
}

/// Mode and mtime, through the open handle (no path lookups).
fn set_metadata(file: &File, path: &Path, entry: &FileEntry) -> Result<(), TransferError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // Permission bits only: a peer never gets a setuid, setgid or sticky file made.
        file.set_permissions(fs::Permissions::from_mode(entry.mode & 0o777))
            .map_err(TransferError::io("setting mode of", path))?;
    }
    let mtime = filetime::FileTime::from_unix_time(entry.mtime.secs, entry.mtime.nanos);
    filetime::set_file_handle_times(file, None, Some(mtime))
        .map_err(TransferError::io("setting mtime of", path))
}

/// BLAKE3 of a file's content: memory-mapped, and hashed on every core for big files.
pub(crate) fn hash_file(path: &Path) -> Result<Hash, TransferError> {
    let mut hasher = blake3::Hasher::new();
    let size = fs::metadata(path)
        .map_err(TransferError::io("inspecting", path))?
        .len();
    if size >= 1 << 20 {
        hasher.update_mmap_rayon(path)
    } else {
        hasher.update_mmap(path)
    }
    .map_err(TransferError::io("reading", path))?;
    Ok(*hasher.finalize().as_bytes())
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;

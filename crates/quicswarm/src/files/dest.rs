//! The receiving side of a transfer, shared by downloads (the client writes) and uploads (the
//! gateway writes). Blocking: call from `spawn_blocking`.
//!
//! Every file is written under a temporary name in its final folder, checked against the
//! sender's BLAKE3, given its mode and mtime, synced, and only then renamed: a reader never
//! sees a half-written file under the final name. Small files are synced in batches (one
//! `syncfs` per batch on Linux). A big file arrives in ranges into a `.qs-part` file beside a
//! `.qs-state` file that records the ranges received and verified, so an interrupted
//! transfer resumes where it stopped.

use std::{
    collections::HashMap,
    fs::{self, File, OpenOptions},
    io::{Read, Write},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
};

use bytes::Bytes;
use quicswarm_proto::{
    path,
    transfer::{range_count, ByteRange, FileEntry, Hash, Need},
};
use serde::{Deserialize, Serialize};

use super::TransferError;

/// A folder files are received into.
#[derive(Debug, Clone)]
pub(crate) struct Destination {
    root: PathBuf,
    locks: Arc<FileLocks>,
}

/// Serialises work on one part file across concurrent requests (ranges of the same file may
/// arrive on several connections at once).
#[derive(Debug, Default)]
pub(crate) struct FileLocks {
    map: Mutex<HashMap<PathBuf, Arc<Mutex<()>>>>,
}

impl FileLocks {
    fn get(&self, path: &Path) -> Arc<Mutex<()>> {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        // Forget locks nobody holds, so the map does not grow with every file ever written.
        map.retain(|_, lock| Arc::strong_count(lock) > 1);
        map.entry(path.to_path_buf()).or_default().clone()
    }
}

/// One whole file to store.
#[derive(Debug)]
pub(crate) struct WholeFile {
    pub(crate) entry: FileEntry,
    pub(crate) data: Bytes,
    /// The sender's BLAKE3 of `data`.
    pub(crate) hash: Hash,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct PartState {
    size: u64,
    range_size: u64,
    hash: Hash,
    done: Vec<bool>,
}

impl Destination {
    /// `root` is created if missing.
    pub(crate) fn new(root: PathBuf, locks: Arc<FileLocks>) -> Self {
        Self { root, locks }
    }

    /// The final path of `rel`, after checking it is portable and that no existing folder
    /// on the way is a symlink or a file; missing folders are created.
    pub(crate) fn target(&self, rel: &str) -> Result<PathBuf, TransferError> {
        let parts = path::validate(rel).map_err(|e| TransferError::unsafe_path(rel, e))?;
        let mut dir = self.root.clone();
        fs::create_dir_all(&dir).map_err(TransferError::io("creating", &dir))?;
        let (name, folders) = parts
            .split_last()
            .ok_or_else(|| TransferError::unsafe_path(rel, path::PathError::Empty))?;
        for folder in folders {
            dir.push(folder);
            match fs::symlink_metadata(&dir) {
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => {
                    return Err(TransferError::Refused {
                        path: rel.to_string(),
                        reason: format!("{} is a symlink or not a folder", dir.display()),
                    })
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    fs::create_dir(&dir)
                        .or_else(|e| {
                            // Another writer made it meanwhile.
                            if e.kind() == std::io::ErrorKind::AlreadyExists {
                                Ok(())
                            } else {
                                Err(e)
                            }
                        })
                        .map_err(TransferError::io("creating", &dir))?;
                }
                Err(e) => return Err(TransferError::io("inspecting", &dir)(e)),
            }
        }
        let target = dir.join(name);
        if let Ok(meta) = fs::symlink_metadata(&target) {
            if !meta.is_file() {
                return Err(TransferError::Refused {
                    path: rel.to_string(),
                    reason: format!("{} exists and is not a regular file", target.display()),
                });
            }
        }
        Ok(target)
    }

    /// What is still needed of `entry` (which must carry its hash).
    pub(crate) fn need(&self, entry: &FileEntry, range_size: u64) -> Result<Need, TransferError> {
        let target = self.target(entry.path.as_str())?;
        if let (Ok(meta), Some(hash)) = (fs::metadata(&target), entry.hash) {
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
        let (part, state_path) = part_paths(&target, &hash);
        let count = range_count(entry.size, range_size) as usize;
        let missing = match read_state(&state_path) {
            Some(state)
                if state.size == entry.size
                    && state.range_size == range_size
                    && state.hash == hash
                    && state.done.len() == count
                    && part.exists() =>
            {
                state
                    .done
                    .iter()
                    .enumerate()
                    .filter(|(_, d)| !**d)
                    .map(|(i, _)| i as u32)
                    .collect()
            }
            _ => (0..count as u32).collect(),
        };
        Ok(Need::Ranges(missing))
    }

    /// Stores whole files: temp files, verify, metadata, one sync for the batch, renames.
    /// Returns one result per file, in order.
    pub(crate) fn write_batch(&self, files: Vec<WholeFile>) -> Vec<Result<(), TransferError>> {
        let mut staged: Vec<Result<(TempFile, PathBuf), TransferError>> =
            files.iter().map(|f| self.stage(f)).collect();
        if staged.iter().any(Result::is_ok) {
            // One sync for every file of the batch (not one per tiny file).
            if let Err(e) = sync_all_staged(&staged) {
                for s in staged.iter_mut() {
                    if s.is_ok() {
                        *s = Err(e.clone());
                    }
                }
            }
        }
        let mut dirs = Vec::new();
        let results: Vec<_> = staged
            .into_iter()
            .map(|s| {
                let (temp, target) = s?;
                let dir = target.parent().map(Path::to_path_buf);
                temp.commit(&target)?;
                if let Some(dir) = dir {
                    if !dirs.contains(&dir) {
                        dirs.push(dir);
                    }
                }
                Ok(())
            })
            .collect();
        for dir in dirs {
            sync_dir(&dir);
        }
        results
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
        let temp = TempFile::create(&target)?;
        let mut f = temp.file()?;
        f.write_all(&file.data)
            .map_err(TransferError::io("writing", temp.path()))?;
        drop(f);
        set_metadata(temp.path(), &file.entry)?;
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
        let whole = entry.hash.ok_or_else(|| TransferError::Integrity {
            path: entry.path.clone(),
            detail: "a ranged file needs its whole-file hash".into(),
        })?;
        let count = range_count(entry.size, range_size) as usize;
        let expected_offset = u64::from(range.index) * range_size;
        let expected_len = range_size.min(entry.size.saturating_sub(expected_offset));
        if range.index as usize >= count
            || range.offset != expected_offset
            || range.len != expected_len
            || data.len() as u64 != range.len
        {
            return Err(TransferError::Integrity {
                path: entry.path.clone(),
                detail: format!(
                    "range {range:?} does not fit a file of {} bytes",
                    entry.size
                ),
            });
        }
        let actual = blake3::hash(data);
        if actual.as_bytes() != range_hash {
            return Err(TransferError::Integrity {
                path: entry.path.clone(),
                detail: format!(
                    "range {} hashes to {actual}, sender said {}",
                    range.index,
                    hex(range_hash)
                ),
            });
        }
        let target = self.target(&entry.path)?;
        let (part, state_path) = part_paths(&target, &whole);
        let lock = self.locks.get(&part);
        let _guard = lock.lock().unwrap_or_else(PoisonError::into_inner);

        let fresh = PartState {
            size: entry.size,
            range_size,
            hash: whole,
            done: vec![false; count],
        };
        let mut state = match read_state(&state_path) {
            Some(s)
                if s.size == fresh.size
                    && s.range_size == range_size
                    && s.hash == whole
                    && s.done.len() == count
                    && part.exists() =>
            {
                s
            }
            _ => fresh,
        };
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .read(true)
            .open(&part)
            .map_err(TransferError::io("opening", &part))?;
        if file
            .metadata()
            .map_err(TransferError::io("inspecting", &part))?
            .len()
            != entry.size
        {
            file.set_len(entry.size)
                .map_err(TransferError::io("sizing", &part))?;
        }
        write_at(&file, data, range.offset).map_err(TransferError::io("writing", &part))?;
        // Durable before the state says so: a crash never marks unwritten bytes as verified.
        let written = write_at(&file, data, range.offset).and_then(|()| file.sync_data());
        if let Err(e) = written {
            return Err(self.failed_range(&target, &whole, TransferError::io("writing", &part)(e)));
        }
        state.done[range.index as usize] = true;
        if state.done.iter().all(|d| *d) {
            drop(file);
            let actual = hash_file(&part)?;
            if actual != whole {
                let _ = fs::remove_file(&part);
                let _ = fs::remove_file(&state_path);
                return Err(TransferError::Integrity {
                    path: entry.path.clone(),
                    detail: format!(
                        "assembled file hashes to {}, sender said {}",
                        hex(&actual),
                        hex(&whole)
                    ),
                });
            }
            set_metadata(&part, entry)?;
            File::open(&part)
                .and_then(|f| f.sync_all())
                .map_err(TransferError::io("syncing", &part))?;
            fs::rename(&part, &target).map_err(TransferError::io("renaming", &part))?;
            let _ = fs::remove_file(&state_path);
            if let Some(dir) = target.parent() {
                sync_dir(dir);
            }
            return Ok(true);
        }
        write_state(&state_path, &state).map_err(|e| self.failed_range(&target, &whole, e))?;
        Ok(false)
    }
}

/// The part and state files of a ranged transfer. The content hash is in the names, so two
/// uploads of different content to one name never mix their ranges.
fn part_paths(target: &Path, hash: &Hash) -> (PathBuf, PathBuf) {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tag = hex(&hash[..8]);
    let dir = target.parent().unwrap_or(Path::new("."));
    (
        dir.join(format!(".{name}.{tag}.qs-part")),
        dir.join(format!(".{name}.{tag}.qs-state")),
    )
}

fn read_state(path: &Path) -> Option<PartState> {
    let bytes = fs::read(path).ok()?;
    postcard::from_bytes(&bytes).ok()
}

fn write_state(path: &Path, state: &PartState) -> Result<(), TransferError> {
    let bytes = postcard::to_stdvec(state).map_err(|e| TransferError::Io {
        action: "encoding",
        path: path.to_path_buf(),
        message: e.to_string(),
        kind: std::io::ErrorKind::InvalidData,
    })?;
    let temp = TempFile::create(path)?;
    let mut f = temp.file()?;
    f.write_all(&bytes)
        .and_then(|()| f.sync_data())
        .map_err(TransferError::io("writing", temp.path()))?;
    drop(f);
    temp.commit(path)
}

/// A temporary file beside its target, removed on drop unless committed.
#[derive(Debug)]
struct TempFile {
    path: Option<PathBuf>,
}

impl TempFile {
    fn create(target: &Path) -> Result<Self, TransferError> {
        let dir = target.parent().unwrap_or(Path::new("."));
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // Unique per writer: concurrent writers of one name never share a temp file.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = dir.join(format!(".{name}.{}-{n}.qs-tmp", std::process::id()));
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(TransferError::io("creating", &path))?;
        Ok(Self { path: Some(path) })
    }

    fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new(""))
    }

    fn file(&self) -> Result<File, TransferError> {
        OpenOptions::new()
            .write(true)
            .open(self.path())
            .map_err(TransferError::io("opening", self.path()))
    }

    fn commit(mut self, target: &Path) -> Result<(), TransferError> {
        let path = self.path.take().unwrap_or_default();
        fs::rename(&path, target).map_err(|e| {
            let _ = fs::remove_file(&path);
            TransferError::io("renaming", &path)(e)
        })
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            let _ = fs::remove_file(path);
        }
    }
}

fn sync_all_staged(
    staged: &[Result<(TempFile, PathBuf), TransferError>],
) -> Result<(), TransferError> {
    let paths: Vec<&Path> = staged
        .iter()
        .filter_map(|s| s.as_ref().ok())
        .map(|(t, _)| t.path())
        .collect();
    sync_files(&paths)
}

/// Makes the data of `paths` durable: one `syncfs` on Linux (they share a folder and so a
/// filesystem in practice; every distinct filesystem gets its own call), `fsync` each
/// elsewhere.
fn sync_files(paths: &[&Path]) -> Result<(), TransferError> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::MetadataExt;
        let mut devices = Vec::new();
        for path in paths {
            let meta = fs::metadata(path).map_err(TransferError::io("inspecting", *path))?;
            if !devices.contains(&meta.dev()) {
                devices.push(meta.dev());
                let f = File::open(path).map_err(TransferError::io("opening", *path))?;
                rustix::fs::syncfs(&f)
                    .map_err(|e| TransferError::io("syncing", *path)(e.into()))?;
            }
        }
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        for path in paths {
            File::open(path)
                .and_then(|f| f.sync_all())
                .map_err(TransferError::io("syncing", *path))?;
        }
        Ok(())
    }
}

/// Makes renames in `dir` durable; best effort (not every platform can sync a folder).
fn sync_dir(dir: &Path) {
    if let Ok(f) = File::open(dir) {
        let _ = f.sync_all();
    }
}

fn set_metadata(path: &Path, entry: &FileEntry) -> Result<(), TransferError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(entry.mode & 0o7777))
            .map_err(TransferError::io("setting mode of", path))?;
    }
    let mtime = filetime::FileTime::from_unix_time(entry.mtime.secs, entry.mtime.nanos);
    filetime::set_file_mtime(path, mtime).map_err(TransferError::io("setting mtime of", path))
}

#[cfg(unix)]
fn write_at(file: &File, data: &[u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, data, offset)
}

#[cfg(not(unix))]
fn write_at(mut file: &File, data: &[u8], offset: u64) -> std::io::Result<()> {
    use std::io::Seek;
    file.seek(std::io::SeekFrom::Start(offset))?;
    file.write_all(data)
}

/// BLAKE3 of a file's content.
pub(crate) fn hash_file(path: &Path) -> Result<Hash, TransferError> {
    let mut f = File::open(path).map_err(TransferError::io("opening", path))?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(TransferError::io("reading", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(*hasher.finalize().as_bytes())
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

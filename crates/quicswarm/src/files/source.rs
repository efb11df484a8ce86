//! The sending side: choosing files below a root and reading them. Blocking: call from
//! `spawn_blocking`.
//!
//! Nothing outside a root is reachable: every path is validated as portable and relative, and
//! walked component by component so that no symlink (inside or outside the root) is followed.

use std::{
    fs::{self, File},
    path::{Path, PathBuf},
    sync::Arc,
    time::UNIX_EPOCH,
};

use bytes::Bytes;
use quicswarm_proto::{
    path,
    transfer::{ByteRange, FileEntry, Hash, Mtime},
};

use super::{buffers::BufferPool, pieces::PieceCache, TransferError};

/// The folder `rel` names below `root`, checked: portable, and no symlink on the way.
pub(crate) fn resolve(root: &Path, rel: &str) -> Result<PathBuf, TransferError> {
    let parts = path::validate(rel).map_err(|e| TransferError::unsafe_path(rel, e))?;
    let mut full = root.to_path_buf();
    for part in parts {
        full.push(part);
        let meta = fs::symlink_metadata(&full).map_err(TransferError::io("inspecting", &full))?;
        if meta.file_type().is_symlink() {
            return Err(TransferError::Refused {
                path: rel.to_string(),
                reason: "symlinks are not followed".into(),
            });
        }
    }
    Ok(full)
}

/// A served root, opened once for a run of reads.
#[derive(Debug)]
pub(crate) struct Root {
    path: PathBuf,
    #[cfg(target_os = "linux")]
    dir: Option<File>,
}

impl Root {
    pub(crate) fn new(path: PathBuf) -> Self {
        #[cfg(target_os = "linux")]
        let dir = File::open(&path).ok();
        Self {
            #[cfg(target_os = "linux")]
            dir,
            path,
        }
    }

    /// Opens `rel` for reading, never leaving the root and never through a symlink.
    pub(super) fn open(&self, rel: &str) -> Result<(File, PathBuf), TransferError> {
        path::validate(rel).map_err(|e| TransferError::unsafe_path(rel, e))?;
        let full = self.path.join(rel);
        #[cfg(target_os = "linux")]
        if let Some(dir) = &self.dir {
            use rustix::fs::{Mode, OFlags, ResolveFlags};
            // One race-free call: the kernel refuses any symlink and any escape from the root.
            let how =
                ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
            // Non-blocking: opening a FIFO planted under the root must not wait for a writer
            // (reads check the type right after).
            match rustix::fs::openat2(
                dir,
                rel,
                OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK,
                Mode::empty(),
                how,
            ) {
                Ok(fd) => return Ok((File::from(fd), full)),
                Err(rustix::io::Errno::LOOP | rustix::io::Errno::XDEV) => {
                    return Err(TransferError::Refused {
                        path: rel.to_string(),
                        reason: "symlinks are not followed".into(),
                    })
                }
                // Kernels before 5.6 have no openat2: walk the path instead.
                Err(rustix::io::Errno::NOSYS) => {}
                Err(e) => return Err(TransferError::io("opening", &full)(e.into())),
            }
        }
        let full = resolve(&self.path, rel)?;
        let file = open_nonblocking(&full).map_err(TransferError::io("opening", &full))?;
        Ok((file, full))
    }
}

/// Opens `path` for reading without blocking on a FIFO or device.
fn open_nonblocking(path: &Path) -> std::io::Result<File> {
    let mut options = fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(
        &mut options,
        rustix::fs::OFlags::NONBLOCK.bits() as i32,
    );
    options.open(path)
}

/// Metadata of a regular file as an entry (without hash).
pub(crate) fn entry_of(rel: String, meta: &fs::Metadata) -> FileEntry {
    let mtime = meta
        .modified()
        .ok()
        .map(|t| match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Mtime {
                secs: d.as_secs() as i64,
                nanos: d.subsec_nanos(),
            },
            Err(before) => {
                let d = before.duration();
                // Negative times: floor to whole seconds, nanos stay positive.
                let (secs, nanos) = if d.subsec_nanos() == 0 {
                    (-(d.as_secs() as i64), 0)
                } else {
                    (-(d.as_secs() as i64) - 1, 1_000_000_000 - d.subsec_nanos())
                };
                Mtime { secs, nanos }
            }
        })
        .unwrap_or_default();
    #[cfg(unix)]
    // Permission bits only: setuid, setgid and sticky never travel.
    let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777;
    #[cfg(not(unix))]
    let mode = if meta.permissions().readonly() {
        0o444
    } else {
        0o644
    };
    FileEntry {
        path: rel,
        size: meta.len(),
        mtime,
        mode,
        hash: None,
    }
}

/// A walkdir failure as a transfer error, naming the path it concerns.
pub(super) fn walk_error(e: &walkdir::Error, fallback: &Path) -> TransferError {
    TransferError::Io {
        action: "walking",
        path: e.path().unwrap_or(fallback).to_path_buf(),
        message: e.to_string(),
        kind: e
            .io_error()
            .map_or(std::io::ErrorKind::Other, std::io::Error::kind),
    }
}

/// `path` below `root` as a `/`-separated string; `None` if not UTF-8.
pub(super) fn relative(root: &Path, path: &Path) -> Option<String> {
    let rel = path.strip_prefix(root).ok()?;
    let parts: Option<Vec<&str>> = rel.components().map(|c| c.as_os_str().to_str()).collect();
    Some(parts?.join("/"))
}

/// A file's bytes (whole, or a range) with its current metadata and their hash: BLAKE3 of a
/// whole file, [`range_hash`](super::tree::range_hash) of a range.
#[derive(Debug)]
pub(crate) struct Read {
    pub(crate) entry: FileEntry,
    pub(crate) data: Bytes,
    pub(crate) hash: Hash,
}

/// A file opened for a read: what will be read of it, before anything is.
#[derive(Debug)]
pub(crate) struct Opened {
    file: File,
    full: PathBuf,
    meta: fs::Metadata,
    entry: FileEntry,
    range: Option<ByteRange>,
    offset: u64,
    /// Bytes the read will take.
    pub(crate) len: u64,
}

/// Opens `rel` below `root` for a read, whole (at most `max_whole` bytes) or one range, and
/// checks it: a regular file, the range inside it.
pub(crate) fn open(
    root: &Root,
    rel: &str,
    range: Option<ByteRange>,
    max_whole: u64,
) -> Result<Opened, TransferError> {
    let (file, full) = root.open(rel)?;
    let meta = file
        .metadata()
        .map_err(TransferError::io("inspecting", &full))?;
    if !meta.is_file() {
        return Err(TransferError::Refused {
            path: rel.to_string(),
            reason: "not a regular file".into(),
        });
    }
    let entry = entry_of(rel.to_string(), &meta);
    let (offset, len) = match range {
        None if entry.size > max_whole => {
            return Err(TransferError::Refused {
                path: rel.to_string(),
                reason: format!(
                    "{} bytes is too large to send whole; ask for ranges",
                    entry.size
                ),
            })
        }
        None => (0, entry.size),
        Some(r) if r.len > max_whole || r.offset.saturating_add(r.len) > entry.size => {
            return Err(TransferError::Refused {
                path: rel.to_string(),
                reason: format!(
                    "range {}+{} does not fit a file of {} bytes",
                    r.offset, r.len, entry.size
                ),
            })
        }
        Some(r) => (r.offset, r.len),
    };
    Ok(Opened {
        file,
        full,
        meta,
        entry,
        range,
        offset,
        len,
    })
}

/// Reads an opened file's bytes with their hash.
/// The hash of a range comes from `pieces` when they know the file (see [`PieceCache`]).
pub(crate) fn read_opened(
    opened: Opened,
    pieces: &PieceCache,
    buffers: &Arc<BufferPool>,
) -> Result<Read, TransferError> {
    let Opened {
        file,
        full,
        meta,
        entry,
        range,
        offset,
        len,
    } = opened;
    let data =
        read_exact_at(&file, offset, len, buffers).map_err(TransferError::io("reading", &full))?;
    let hash = match range {
        Some(_) => pieces
            .range(&full, &meta, offset, len)
            .unwrap_or_else(|| super::tree::range_hash(offset, &data)),
        None => *blake3::hash(&data).as_bytes(),
    };
    Ok(Read { entry, data, hash })
}

/// An opened file sent in chunks, each read only when the one before is on its way, and
/// hashed as it goes (unless the piece cache knows the hash): a piece bigger than what an
/// operation reads ahead costs one chunk of memory, not the piece.
#[derive(Debug)]
pub(crate) struct Streamed {
    opened: Opened,
    buffers: Arc<BufferPool>,
    hasher: Option<blake3::Hasher>,
    known: Option<Hash>,
    done: u64,
}

impl Streamed {
    pub(crate) fn new(opened: Opened, pieces: &PieceCache, buffers: &Arc<BufferPool>) -> Self {
        let (offset, len) = (opened.offset, opened.len);
        let known = opened
            .range
            .and_then(|_| pieces.range(&opened.full, &opened.meta, offset, len));
        let hasher = known.is_none().then(|| {
            let mut hasher = blake3::Hasher::new();
            // A range that is a subtree is announced by its chaining value (see `range_hash`).
            if opened.range.is_some() && super::tree::is_subtree(offset, len) {
                blake3::hazmat::HasherExt::set_input_offset(&mut hasher, offset);
            }
            hasher
        });
        Self {
            opened,
            buffers: buffers.clone(),
            hasher,
            known,
            done: 0,
        }
    }

    /// The entry, and the bytes that will be sent.
    pub(crate) fn header(&self) -> (&FileEntry, u64) {
        (&self.opened.entry, self.opened.len)
    }

    /// Bytes not read yet.
    pub(crate) fn left(&self) -> u64 {
        self.opened.len - self.done
    }

    /// The next at most `max` bytes (blocking).
    pub(crate) fn next_chunk(&mut self, max: u64) -> Result<Bytes, TransferError> {
        let len = max.min(self.left());
        let at = self.opened.offset + self.done;
        let data = read_exact_at(&self.opened.file, at, len, &self.buffers)
            .map_err(TransferError::io("reading", &self.opened.full))?;
        if let Some(hasher) = &mut self.hasher {
            hasher.update(&data);
        }
        self.done += len;
        Ok(data)
    }

    /// The hash of everything sent, as [`read_opened`] gives it.
    pub(crate) fn finish(self) -> Hash {
        match (self.known, self.hasher) {
            (Some(hash), _) => hash,
            (None, Some(hasher))
                if self.opened.range.is_some()
                    && super::tree::is_subtree(self.opened.offset, self.opened.len) =>
            {
                blake3::hazmat::HasherExt::finalize_non_root(&hasher)
            }
            (None, Some(hasher)) => *hasher.finalize().as_bytes(),
            (None, None) => [0; 32],
        }
    }
}

/// `len` bytes at `offset` of a file just opened (at its start). A piece the size `buffers`
/// pools is read into one of its buffers; anything else into a fresh buffer that is not
/// zeroed first.
pub(crate) fn read_exact_at(
    mut file: &File,
    offset: u64,
    len: u64,
    buffers: &Arc<BufferPool>,
) -> std::io::Result<Bytes> {
    use std::io::{Read as _, Seek, SeekFrom};
    let shrank = || {
        std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "file shrank while reading",
        )
    };
    let size = usize::try_from(len).map_err(|_| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "piece larger than memory")
    })?;
    if buffers.pools(size) {
        let mut buf = buffers.take(size);
        super::tree::read_exact_at(file, buf.as_mut_slice(), offset).map_err(|e| {
            match e.kind() {
                std::io::ErrorKind::UnexpectedEof => shrank(),
                _ => e,
            }
        })?;
        return Ok(buf.freeze());
    }
    // A whole file is read from where a new handle stands: one system call less per file.
    if offset > 0 {
        file.seek(SeekFrom::Start(offset))?;
    }
    let mut data = Vec::with_capacity(size);
    file.take(len).read_to_end(&mut data)?;
    if data.len() != size {
        return Err(shrank());
    }
    Ok(data.into())
}

/// Local files for an upload: each path is a file (sent by its name) or a folder (sent with
/// its name and everything below it). Symlinks are skipped and counted. Returns the entries
/// (hashed) with their local paths.
pub(crate) fn local_files(
    paths: &[PathBuf],
    pieces: &PieceCache,
) -> Result<(Vec<(FileEntry, PathBuf)>, u64), TransferError> {
    let mut out = Vec::new();
    let mut skipped = 0;
    for p in paths {
        let meta = fs::symlink_metadata(p).map_err(TransferError::io("inspecting", p))?;
        let name = p
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| TransferError::Refused {
                path: p.display().to_string(),
                reason: "no UTF-8 file name".into(),
            })?
            .to_string();
        if meta.is_file() {
            path::validate(&name).map_err(|e| TransferError::unsafe_path(&name, e))?;
            out.push((entry_of(name, &meta), p.clone()));
            continue;
        }
        if !meta.is_dir() {
            skipped += 1;
            continue;
        }
        let parent = p.parent().unwrap_or(Path::new(""));
        for item in walkdir::WalkDir::new(p).follow_links(false).min_depth(1) {
            let item = item.map_err(|e| walk_error(&e, p))?;
            if item.file_type().is_dir() {
                continue;
            }
            if !item.file_type().is_file() {
                skipped += 1;
                continue;
            }
            let rel = relative(parent, item.path()).ok_or_else(|| TransferError::Refused {
                path: item.path().display().to_string(),
                reason: "not UTF-8".into(),
            })?;
            path::validate(&rel).map_err(|e| TransferError::unsafe_path(&rel, e))?;
            let meta = item.metadata().map_err(|e| walk_error(&e, item.path()))?;
            out.push((entry_of(rel, &meta), item.path().to_path_buf()));
        }
    }
    out.sort_by(|a, b| a.0.path.cmp(&b.0.path));
    for (entry, local) in &mut out {
        let local = &*local;
        let file = File::open(local).map_err(TransferError::io("opening", local))?;
        let hash = pieces
            .hash(&file, local)
            .map_err(TransferError::io("hashing", local))?;
        entry.hash = Some(hash);
    }
    Ok((out, skipped))
}

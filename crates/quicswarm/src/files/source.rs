//! The sending side: choosing files below a root and reading them. Blocking: call from
//! `spawn_blocking`.
//!
//! Nothing outside a root is reachable: every path is validated as portable and relative, and
//! walked component by component so that no symlink (inside or outside the root) is followed.

use std::{
    fs::{self, File},
    path::{Path, PathBuf},
    time::UNIX_EPOCH,
};

use bytes::Bytes;
use quicswarm_proto::{
    path,
    transfer::{ByteRange, FileEntry, Hash, Mtime, Selector},
};

use super::{tree::PieceCache, TransferError};

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
    fn open(&self, rel: &str) -> Result<(File, PathBuf), TransferError> {
        path::validate(rel).map_err(|e| TransferError::unsafe_path(rel, e))?;
        let full = self.path.join(rel);
        #[cfg(target_os = "linux")]
        if let Some(dir) = &self.dir {
            use rustix::fs::{Mode, OFlags, ResolveFlags};
            // One race-free call: the kernel refuses any symlink and any escape from the root.
            let how =
                ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
            match rustix::fs::openat2(
                dir,
                rel,
                OFlags::RDONLY | OFlags::CLOEXEC,
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
        let file = File::open(&full).map_err(TransferError::io("opening", &full))?;
        Ok((file, full))
    }
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
    let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777;
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

/// Compiled glob and regex of a selector.
struct Matcher {
    glob: Option<globset::GlobMatcher>,
    regex: Option<regex::Regex>,
}

impl Matcher {
    fn new(selector: &Selector) -> Result<Self, TransferError> {
        let bad = |what: &str, e: String| TransferError::BadSelector(format!("{what}: {e}"));
        let glob = selector
            .glob
            .as_deref()
            .map(|g| {
                globset::GlobBuilder::new(g)
                    .literal_separator(true)
                    .build()
                    .map(|g| g.compile_matcher())
                    .map_err(|e| bad("glob", e.to_string()))
            })
            .transpose()?;
        let regex = selector
            .regex
            .as_deref()
            .map(|r| regex::Regex::new(r).map_err(|e| bad("regex", e.to_string())))
            .transpose()?;
        Ok(Self { glob, regex })
    }

    fn matches(&self, rel: &str) -> bool {
        self.glob.as_ref().is_none_or(|g| g.is_match(rel))
            && self.regex.as_ref().is_none_or(|r| r.is_match(rel))
    }
}

/// The regular files `selector` picks below `root`, sorted by path; and how many entries were
/// left out (symlinks, special files, names that are not portable).
/// With `hash`, every entry gets its BLAKE3, and the cache its pieces' hashes.
pub(crate) fn list(
    root: &Path,
    selector: &Selector,
    hash: Option<&PieceCache>,
) -> Result<(Vec<FileEntry>, u64), TransferError> {
    let matcher = Matcher::new(selector)?;
    let mut starts = Vec::new();
    if selector.paths.is_empty() {
        starts.push(selector.dir.clone());
    } else {
        for p in &selector.paths {
            let joined = if selector.dir.is_empty() {
                p.clone()
            } else {
                path::join(&selector.dir, p)
            };
            starts.push(joined);
        }
    }
    let explicit = !selector.paths.is_empty();
    let mut entries = Vec::new();
    let mut skipped = 0u64;
    for start in starts {
        let base = if start.is_empty() {
            root.to_path_buf()
        } else {
            resolve(root, &start)?
        };
        let meta = fs::symlink_metadata(&base).map_err(TransferError::io("inspecting", &base))?;
        if meta.is_file() {
            // An explicitly named file is taken even if the glob or regex would not match it.
            if explicit || matcher.matches(&start) {
                entries.push(entry_of(start, &meta));
            }
            continue;
        }
        if !meta.is_dir() {
            return Err(TransferError::Refused {
                path: start,
                reason: "not a regular file or folder".into(),
            });
        }
        let mut walk = walkdir::WalkDir::new(&base)
            .follow_links(false)
            .min_depth(1);
        if !selector.recursive {
            walk = walk.max_depth(1);
        }
        for item in walk {
            let item = item.map_err(|e| walk_error(&e, &base))?;
            let ft = item.file_type();
            if ft.is_dir() {
                continue;
            }
            let Some(rel) = relative(root, item.path()) else {
                skipped += 1;
                continue;
            };
            if !ft.is_file() || path::validate(&rel).is_err() {
                skipped += 1;
                continue;
            }
            if !matcher.matches(&rel) {
                continue;
            }
            let meta = item.metadata().map_err(|e| walk_error(&e, item.path()))?;
            entries.push(entry_of(rel, &meta));
        }
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    entries.dedup_by(|a, b| a.path == b.path);
    if let Some(cache) = hash {
        let root = Root::new(root.to_path_buf());
        for entry in &mut entries {
            let (file, full) = root.open(&entry.path)?;
            let hash = cache
                .hash(&file, &full)
                .map_err(TransferError::io("hashing", &full))?;
            entry.hash = Some(hash);
        }
    }
    Ok((entries, skipped))
}

/// A walkdir failure as a transfer error, naming the path it concerns.
fn walk_error(e: &walkdir::Error, fallback: &Path) -> TransferError {
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
fn relative(root: &Path, path: &Path) -> Option<String> {
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

/// Reads `rel` below `root`, whole (at most `max_whole` bytes) or one range.
/// The hash of a range comes from `pieces` when they know the file (see [`PieceCache`]).
pub(crate) fn read(
    root: &Root,
    rel: &str,
    range: Option<ByteRange>,
    max_whole: u64,
    pieces: &PieceCache,
) -> Result<Read, TransferError> {
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
    let data = read_exact_at(&file, offset, len).map_err(TransferError::io("reading", &full))?;
    let hash = match range {
        Some(_) => pieces
            .range(&full, &meta, offset, len)
            .unwrap_or_else(|| super::tree::range_hash(offset, &data)),
        None => *blake3::hash(&data).as_bytes(),
    };
    Ok(Read {
        entry,
        data: data.into(),
        hash,
    })
}

/// `len` bytes at `offset` of a file just opened (at its start), into a fresh buffer that is
/// not zeroed first.
pub(crate) fn read_exact_at(mut file: &File, offset: u64, len: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Read as _, Seek, SeekFrom};
    // A whole file is read from where a new handle stands: one system call less per file.
    if offset > 0 {
        file.seek(SeekFrom::Start(offset))?;
    }
    let mut data = Vec::with_capacity(len as usize);
    file.take(len).read_to_end(&mut data)?;
    if data.len() as u64 != len {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "file shrank while reading",
        ));
    }
    Ok(data)
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

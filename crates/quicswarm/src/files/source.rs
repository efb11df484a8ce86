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
    limits::MAX_PATTERN_LEN,
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

/// Compiled glob and regex of a selector.
struct Matcher {
    glob: Option<globset::GlobMatcher>,
    regex: Option<regex::Regex>,
}

/// Deepest nesting of `{…}` alternates and `[…]` classes accepted in a glob.
const MAX_GLOB_NESTING: usize = 8;
/// Size limits of a compiled regex (its program and its lazy DFA's cache), and its nesting.
const REGEX_SIZE_LIMIT: usize = 1 << 20;
const REGEX_NEST_LIMIT: u32 = 32;

impl Matcher {
    /// Compiles a selector's patterns, each checked for length (and a glob for nesting)
    /// before it is parsed, and a regex compiled within size and nesting limits: a hostile
    /// pattern costs at most a few megabytes and milliseconds.
    fn new(selector: &Selector) -> Result<Self, TransferError> {
        let bad = |what: &str, e: String| TransferError::BadSelector(format!("{what}: {e}"));
        let glob = selector
            .glob
            .as_deref()
            .map(|g| {
                TransferError::check("glob length", g.len() as u64, MAX_PATTERN_LEN as u64)?;
                let depth = glob_nesting(g);
                TransferError::check("glob nesting", depth as u64, MAX_GLOB_NESTING as u64)?;
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
            .map(|r| {
                TransferError::check("regex length", r.len() as u64, MAX_PATTERN_LEN as u64)?;
                regex::RegexBuilder::new(r)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .dfa_size_limit(REGEX_SIZE_LIMIT)
                    .nest_limit(REGEX_NEST_LIMIT)
                    .build()
                    .map_err(|e| bad("regex", e.to_string()))
            })
            .transpose()?;
        Ok(Self { glob, regex })
    }

    fn matches(&self, rel: &str) -> bool {
        self.glob.as_ref().is_none_or(|g| g.is_match(rel))
            && self.regex.as_ref().is_none_or(|r| r.is_match(rel))
    }
}

/// How deeply `{` and `[` nest in a glob (escapes skipped).
fn glob_nesting(glob: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let mut chars = glob.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '{' | '[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            '}' | ']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// A checked `List`: its patterns compiled and its starting points resolved, deduplicated and
/// pruned so that no file is visited twice (a start inside a folder that is walked anyway is
/// dropped). Made before the listing is accepted, so a bad selector is a plain error.
pub(crate) struct ListPlan {
    root: PathBuf,
    matcher: Matcher,
    recursive: bool,
    starts: Vec<Start>,
}

struct Start {
    rel: String,
    path: PathBuf,
    meta: fs::Metadata,
}

/// Checks `selector` for a listing of `root`: at most `max_paths` paths, patterns within
/// their limits, every start inside the root.
pub(crate) fn plan_list(
    root: &Path,
    selector: &Selector,
    max_paths: usize,
) -> Result<ListPlan, TransferError> {
    TransferError::check("list paths", selector.paths.len() as u64, max_paths as u64)?;
    let matcher = Matcher::new(selector)?;
    let explicit = !selector.paths.is_empty();
    let mut rels: Vec<String> = if explicit {
        selector
            .paths
            .iter()
            .map(|p| match (selector.dir.is_empty(), p.is_empty()) {
                (true, _) => p.clone(),
                (false, true) => selector.dir.clone(),
                (false, false) => path::join(&selector.dir, p),
            })
            .collect()
    } else {
        vec![selector.dir.clone()]
    };
    rels.sort();
    rels.dedup();
    let mut resolved = Vec::with_capacity(rels.len());
    for rel in rels {
        let path = if rel.is_empty() {
            root.to_path_buf()
        } else {
            resolve(root, &rel)?
        };
        let meta = fs::symlink_metadata(&path).map_err(TransferError::io("inspecting", &path))?;
        if !meta.is_file() && !meta.is_dir() {
            return Err(TransferError::Refused {
                path: rel,
                reason: "not a regular file or folder".into(),
            });
        }
        resolved.push(Start { rel, path, meta });
    }
    let folders: std::collections::HashSet<String> = resolved
        .iter()
        .filter(|s| s.meta.is_dir())
        .map(|s| s.rel.clone())
        .collect();
    let recursive = selector.recursive;
    let starts = resolved
        .into_iter()
        .filter(|s| {
            // A folder start visits its files; is this one visited by another start already?
            let walked_by =
                |folder: &str| folders.contains(folder) && (recursive || parent(&s.rel) == folder);
            let covered = ancestors(&s.rel).any(walked_by);
            if s.meta.is_dir() {
                !(covered && recursive)
            } else {
                // An explicit file is listed even if the patterns do not pick it; the walk of
                // its folder lists it only if they do.
                !(covered && matcher.matches(&s.rel))
            }
        })
        .collect();
    Ok(ListPlan {
        root: root.to_path_buf(),
        matcher,
        recursive,
        starts,
    })
}

/// The folders above `rel` (`""` for the root included), nearest first.
fn ancestors(rel: &str) -> impl Iterator<Item = &str> {
    let cuts = rel.rmatch_indices('/').map(|(i, _)| &rel[..i]);
    cuts.chain((!rel.is_empty()).then_some(""))
}

/// The folder holding `rel` (`""` at the top).
fn parent(rel: &str) -> &str {
    rel.rsplit_once('/').map_or("", |(dir, _)| dir)
}

/// Walks a checked listing, handing each regular file to `emit` as it is found (in folder
/// order, names sorted within a folder) until `emit` returns `false`; nothing is collected,
/// so a huge tree costs time, not memory. With `hash`, each entry gets its BLAKE3 and the
/// cache its pieces. Returns how many entries were left out (symlinks, special files, names
/// that are not portable).
pub(crate) fn walk(
    plan: ListPlan,
    hash: Option<&PieceCache>,
    emit: &mut dyn FnMut(FileEntry) -> bool,
) -> Result<u64, TransferError> {
    let reader = hash.map(|_| Root::new(plan.root.clone()));
    let mut finish = |mut entry: FileEntry| -> Result<bool, TransferError> {
        if let (Some(cache), Some(root)) = (hash, &reader) {
            let (file, full) = root.open(&entry.path)?;
            let meta = file
                .metadata()
                .map_err(TransferError::io("inspecting", &full))?;
            if !meta.is_file() {
                return Err(TransferError::Refused {
                    path: entry.path,
                    reason: "not a regular file".into(),
                });
            }
            let hash = cache
                .hash(&file, &full)
                .map_err(TransferError::io("hashing", &full))?;
            entry.hash = Some(hash);
        }
        Ok(emit(entry))
    };
    let mut skipped = 0u64;
    for start in plan.starts {
        if start.meta.is_file() {
            if !finish(entry_of(start.rel, &start.meta))? {
                return Ok(skipped);
            }
            continue;
        }
        let mut walk = walkdir::WalkDir::new(&start.path)
            .follow_links(false)
            .sort_by_file_name()
            .min_depth(1);
        if !plan.recursive {
            walk = walk.max_depth(1);
        }
        for item in walk {
            let item = item.map_err(|e| walk_error(&e, &start.path))?;
            let ft = item.file_type();
            if ft.is_dir() {
                continue;
            }
            let Some(rel) = relative(&plan.root, item.path()) else {
                skipped += 1;
                continue;
            };
            if !ft.is_file() || path::validate(&rel).is_err() {
                skipped += 1;
                continue;
            }
            if !plan.matcher.matches(&rel) {
                continue;
            }
            let meta = item.metadata().map_err(|e| walk_error(&e, item.path()))?;
            if !finish(entry_of(rel, &meta))? {
                return Ok(skipped);
            }
        }
    }
    Ok(skipped)
}

/// The regular files `selector` picks below `root`, sorted by path, and how many entries
/// were left out: [`plan_list`] and [`walk`] collected, for local callers.
#[cfg(test)]
pub(crate) fn list(
    root: &Path,
    selector: &Selector,
    hash: Option<&PieceCache>,
) -> Result<(Vec<FileEntry>, u64), TransferError> {
    let plan = plan_list(root, selector, usize::MAX)?;
    let mut entries = Vec::new();
    let skipped = walk(plan, hash, &mut |e| {
        entries.push(e);
        true
    })?;
    entries.sort_by(|a, b| a.path.cmp(&b.path));
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
pub(crate) fn read_opened(opened: Opened, pieces: &PieceCache) -> Result<Read, TransferError> {
    let Opened {
        file,
        full,
        meta,
        entry,
        range,
        offset,
        len,
    } = opened;
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

/// An opened file sent in chunks, each read only when the one before is on its way, and
/// hashed as it goes (unless the piece cache knows the hash): a piece bigger than what an
/// operation reads ahead costs one chunk of memory, not the piece.
#[derive(Debug)]
pub(crate) struct Streamed {
    opened: Opened,
    hasher: Option<blake3::Hasher>,
    known: Option<Hash>,
    done: u64,
}

impl Streamed {
    pub(crate) fn new(opened: Opened, pieces: &PieceCache) -> Self {
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
        let mut data = vec![0u8; len as usize];
        super::tree::read_exact_at(&self.opened.file, &mut data, at)
            .map_err(TransferError::io("reading", &self.opened.full))?;
        if let Some(hasher) = &mut self.hasher {
            hasher.update(&data);
        }
        self.done += len;
        Ok(data.into())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for rel in ["a/x.txt", "a/b/y.log", "a-b/z.txt", "top.txt"] {
            let path = dir.path().join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, rel).unwrap();
        }
        dir
    }

    fn paths(selector: &Selector, root: &Path) -> Vec<String> {
        let (entries, _) = list(root, selector, None).unwrap();
        entries.into_iter().map(|e| e.path).collect()
    }

    #[test]
    fn overlapping_and_repeated_paths_are_walked_once() {
        let dir = tree();
        let mut selector = Selector {
            paths: vec![String::new(); 1000],
            ..Selector::all()
        };
        selector
            .paths
            .extend(["a".into(), "a/b".into(), "a/x.txt".into()]);
        let plan = plan_list(dir.path(), &selector, 4096).unwrap();
        // Everything is below the root: one walk.
        assert_eq!(plan.starts.len(), 1);
        assert_eq!(
            paths(&selector, dir.path()),
            ["a-b/z.txt", "a/b/y.log", "a/x.txt", "top.txt"]
        );
        // Not recursive: a sub-folder is its own start, a direct child file is not.
        selector.recursive = false;
        let plan = plan_list(dir.path(), &selector, 4096).unwrap();
        let starts: Vec<&str> = plan.starts.iter().map(|s| s.rel.as_str()).collect();
        assert_eq!(starts, ["", "a", "a/b"]);
        // An explicit file the pattern does not pick is still listed, once.
        let selector = Selector {
            paths: vec!["a".into(), "a/x.txt".into()],
            glob: Some("**/*.log".into()),
            ..Selector::all()
        };
        assert_eq!(paths(&selector, dir.path()), ["a/b/y.log", "a/x.txt"]);
    }

    #[test]
    fn a_walk_hands_over_entries_as_it_goes_and_stops_when_told() {
        let dir = tree();
        let plan = plan_list(dir.path(), &Selector::all(), 4096).unwrap();
        let mut seen = Vec::new();
        let skipped = walk(plan, None, &mut |e| {
            seen.push(e.path);
            seen.len() < 2
        })
        .unwrap();
        // Nothing is collected first: the walk stopped at the second entry.
        assert_eq!(seen.len(), 2);
        assert_eq!(skipped, 0);
    }

    #[test]
    fn too_many_paths_and_hostile_patterns_are_refused_before_any_work() {
        let dir = tree();
        let many = Selector {
            paths: vec!["a".into(); 4097],
            ..Selector::all()
        };
        assert!(matches!(
            plan_list(dir.path(), &many, 4096),
            Err(TransferError::LimitExceeded {
                limit: "list paths",
                max: 4096,
                asked: 4097
            })
        ));
        let regex = |r: String| Selector {
            regex: Some(r),
            ..Selector::all()
        };
        // Longer than the limit: refused unparsed.
        let long = regex("\\w".repeat(100_000));
        assert!(matches!(
            plan_list(dir.path(), &long, 4096),
            Err(TransferError::LimitExceeded {
                limit: "regex length",
                ..
            })
        ));
        // Short but huge once compiled: the size limit refuses it.
        let huge = regex("(\\w{100}){100}".into());
        assert!(matches!(
            plan_list(dir.path(), &huge, 4096),
            Err(TransferError::BadSelector(_))
        ));
        let deep = regex(format!("{}a{}", "(".repeat(200), ")".repeat(200)));
        assert!(matches!(
            plan_list(dir.path(), &deep, 4096),
            Err(TransferError::BadSelector(_))
        ));
        let glob = |g: String| Selector {
            glob: Some(g),
            ..Selector::all()
        };
        assert!(matches!(
            plan_list(dir.path(), &glob("*".repeat(5000)), 4096),
            Err(TransferError::LimitExceeded {
                limit: "glob length",
                ..
            })
        ));
        let nested = format!("{}a{}", "{a,".repeat(20), "}".repeat(20));
        assert!(matches!(
            plan_list(dir.path(), &glob(nested), 4096),
            Err(TransferError::LimitExceeded {
                limit: "glob nesting",
                ..
            })
        ));
        assert_eq!(paths(&glob("**/*.log".into()), dir.path()), ["a/b/y.log"]);
    }

    #[cfg(unix)]
    #[test]
    fn a_fifo_is_skipped_by_listings_and_refused_by_reads_without_blocking() {
        let dir = tree();
        let fifo = dir.path().join("a/pipe");
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
        )
        .unwrap();
        let (entries, skipped) = list(dir.path(), &Selector::all(), None).unwrap();
        assert_eq!(skipped, 1);
        assert!(entries.iter().all(|e| e.path != "a/pipe"));
        // Opening it for reading would wait for a writer forever without O_NONBLOCK.
        let root = Root::new(dir.path().to_path_buf());
        assert!(matches!(
            open(&root, "a/pipe", None, 1 << 20),
            Err(TransferError::Refused { .. })
        ));
    }
}

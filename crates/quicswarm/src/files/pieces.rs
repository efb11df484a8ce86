//! The piece hashes of big files a side has hashed, kept while the file stays the same: a
//! range made of whole pieces is then served without hashing its bytes, and the file listed
//! again (a resumed download, another client) without reading it at all.

use std::{
    collections::HashMap,
    fs::File,
    path::{Path, PathBuf},
    sync::{Mutex, PoisonError},
    time::{Duration, SystemTime},
};

use quicswarm_proto::transfer::Hash;

use super::tree::{hash_pieces, merge, range_from_pieces, PIECE};

/// Piece hashes kept at once (2 MiB of them: 64 GiB of files); beyond, older ones go.
const MAX_CACHED_PIECES: usize = 1 << 16;

/// How long before its hashing a file must have last changed for its pieces to stand for
/// it in a later listing. File times have a coarse grain (a few milliseconds on Linux): a
/// write just after the metadata was read may leave them unchanged, and a whole-file hash
/// merged from half-changed content would then fail every transfer of the file until it
/// changes again. (Its ranges are checked one by one: their pieces are used either way.)
const SETTLE: Duration = Duration::from_secs(2);

/// Piece hashes of the files hashed for listings. An entry is used only while the file is
/// the one that was hashed (same device, inode, size, modification and change time); a
/// receiver checks every range and the whole file anyway, so a change these miss fails a
/// check instead of being stored.
#[derive(Debug)]
pub(crate) struct PieceCache {
    files: Mutex<Files>,
    settle: Duration,
}

impl Default for PieceCache {
    fn default() -> Self {
        Self::with_settle(SETTLE)
    }
}

#[derive(Debug, Default)]
struct Files {
    by_path: HashMap<PathBuf, Pieces>,
    /// Piece hashes held in `by_path`, in all.
    held: usize,
}

#[derive(Debug)]
struct Pieces {
    id: FileId,
    hashes: Vec<Hash>,
    /// The file had not changed for a while when it was hashed: the pieces may stand for it
    /// in a later listing too.
    settled: bool,
}

/// What tells one version of a file from another.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileId {
    len: u64,
    modified: Option<SystemTime>,
    /// Device, inode and change time (which no program can set back).
    #[cfg(unix)]
    unix: (u64, u64, i64, i64),
}

impl FileId {
    fn of(meta: &std::fs::Metadata) -> Self {
        #[cfg(unix)]
        use std::os::unix::fs::MetadataExt as _;
        Self {
            len: meta.len(),
            modified: meta.modified().ok(),
            #[cfg(unix)]
            unix: (meta.dev(), meta.ino(), meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// When the file last changed, as far as its times tell.
    fn changed(&self) -> Option<SystemTime> {
        #[cfg(unix)]
        {
            let (_, _, secs, nanos) = self.unix;
            let secs = u64::try_from(secs).ok()?;
            let nanos = u32::try_from(nanos).ok()?;
            SystemTime::UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
        }
        #[cfg(not(unix))]
        self.modified
    }
}

impl PieceCache {
    /// A cache keeping the pieces of files that last changed at least `settle` before they
    /// were hashed.
    pub(crate) fn with_settle(settle: Duration) -> Self {
        Self {
            files: Mutex::default(),
            settle,
        }
    }

    /// The BLAKE3 of `file`, opened from `path`: merged from its pieces when they are known
    /// for this version of it, otherwise read and hashed (as [`hash_pieces`]), its pieces
    /// remembered.
    pub(crate) fn hash(&self, file: &File, path: &Path) -> std::io::Result<Hash> {
        let meta = file.metadata()?;
        if meta.len() <= PIECE {
            // One piece: nothing to keep, and hashing it is cheaper than looking it up.
            return Ok(hash_pieces(file, meta.len())?.0);
        }
        let id = FileId::of(&meta);
        if let Some(whole) = self.known(path, &id) {
            return Ok(whole);
        }
        let started = SystemTime::now();
        let (whole, hashes) = hash_pieces(file, meta.len())?;
        // A file that changed while it was hashed has pieces of no version of it.
        let unchanged = FileId::of(&file.metadata()?) == id;
        let settled = id
            .changed()
            .zip(started.checked_sub(self.settle))
            .is_some_and(|(changed, limit)| changed <= limit);
        if unchanged && hashes.len() <= MAX_CACHED_PIECES {
            self.insert(
                path,
                Pieces {
                    id,
                    hashes,
                    settled,
                },
            );
        }
        Ok(whole)
    }

    /// The whole-file hash of `path` from its cached pieces, if they are of version `id` and
    /// were hashed once it had settled.
    fn known(&self, path: &Path, id: &FileId) -> Option<Hash> {
        let files = self.files.lock().unwrap_or_else(PoisonError::into_inner);
        let pieces = files
            .by_path
            .get(path)
            .filter(|p| &p.id == id && p.settled)?;
        merge(&pieces.hashes, PIECE, id.len)
    }

    fn insert(&self, path: &Path, pieces: Pieces) {
        let mut files = self.files.lock().unwrap_or_else(PoisonError::into_inner);
        let files = &mut *files;
        if let Some(old) = files.by_path.remove(path) {
            files.held -= old.hashes.len();
        }
        while files.held + pieces.hashes.len() > MAX_CACHED_PIECES {
            let Some(victim) = files.by_path.keys().next().cloned() else {
                break;
            };
            if let Some(old) = files.by_path.remove(&victim) {
                files.held -= old.hashes.len();
            }
        }
        files.held += pieces.hashes.len();
        files.by_path.insert(path.to_path_buf(), pieces);
    }

    /// The [`range_hash`](super::range_hash) of a range of the file at `path` (opened, with
    /// `meta`), if its pieces are known for this version of it.
    pub(crate) fn range(
        &self,
        path: &Path,
        meta: &std::fs::Metadata,
        offset: u64,
        len: u64,
    ) -> Option<Hash> {
        let files = self.files.lock().unwrap_or_else(PoisonError::into_inner);
        let pieces = files.by_path.get(path)?;
        if pieces.id != FileId::of(meta) {
            return None;
        }
        range_from_pieces(&pieces.hashes, meta.len(), offset, len)
    }

    /// Piece hashes held.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.files
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .held
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::tree::range_hash;

    fn big_file(dir: &Path) -> (PathBuf, Vec<u8>) {
        let size = 5 * PIECE + 12_345;
        let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let path = dir.join("big");
        std::fs::write(&path, &data).unwrap();
        (path, data)
    }

    #[test]
    fn a_known_file_is_listed_and_served_from_its_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let (path, data) = big_file(dir.path());
        let whole = *blake3::hash(&data).as_bytes();
        let cache = PieceCache::with_settle(Duration::ZERO);
        let file = File::open(&path).unwrap();
        assert_eq!(cache.hash(&file, &path).unwrap(), whole);
        assert_eq!(cache.held(), 6);
        // Known now: merged from its pieces (and its entry not counted twice).
        assert_eq!(
            cache.known(&path, &FileId::of(&file.metadata().unwrap())),
            Some(whole)
        );
        assert_eq!(cache.hash(&file, &path).unwrap(), whole);
        assert_eq!(cache.held(), 6);
        let meta = std::fs::metadata(&path).unwrap();
        let want = range_hash(PIECE, &data[PIECE as usize..2 * PIECE as usize]);
        assert_eq!(cache.range(&path, &meta, PIECE, PIECE), Some(want));
        // A file of one piece is hashed, and nothing of it kept.
        let small = dir.path().join("small");
        std::fs::write(&small, &data[..5000]).unwrap();
        let small_file = File::open(&small).unwrap();
        assert_eq!(
            cache.hash(&small_file, &small).unwrap(),
            *blake3::hash(&data[..5000]).as_bytes()
        );
        assert_eq!(cache.held(), 6);
        // Another version of the file: its old pieces are not used, and it is read again.
        let shorter = &data[..data.len() - 1];
        std::fs::write(&path, shorter).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(cache.range(&path, &meta, PIECE, PIECE), None);
        let file = File::open(&path).unwrap();
        assert_eq!(
            cache.hash(&file, &path).unwrap(),
            *blake3::hash(shorter).as_bytes()
        );
    }

    #[test]
    fn a_file_changed_shortly_before_its_hashing_is_read_again_when_listed_again() {
        let dir = tempfile::tempdir().unwrap();
        let (path, data) = big_file(dir.path());
        // Written a moment ago: within an hour counts as just changed here.
        let cache = PieceCache::with_settle(Duration::from_secs(3600));
        let file = File::open(&path).unwrap();
        let whole = *blake3::hash(&data).as_bytes();
        assert_eq!(cache.hash(&file, &path).unwrap(), whole);
        // Its ranges are served from the pieces (each is checked by the receiver)...
        let meta = file.metadata().unwrap();
        let want = range_hash(0, &data[..PIECE as usize]);
        assert_eq!(cache.range(&path, &meta, 0, PIECE), Some(want));
        // ...but the pieces do not stand for the whole file in a later listing.
        assert_eq!(cache.known(&path, &FileId::of(&meta)), None);
        assert_eq!(cache.hash(&file, &path).unwrap(), whole);
    }
}

//! A big file in the making: its `.qs-part` file and the `.qs-state` file that records which
//! ranges are stored, and the checks a received range passes first.

use super::{hex, links, no_follow};
use std::{
    fs::{self, File, OpenOptions},
    io::Write,
    path::{Path, PathBuf},
};

use quicswarm_proto::{
    limits::MAX_RANGES_PER_FILE,
    transfer::{check_ranges, runs, ByteRange, FileEntry, Hash, RangeRun},
};
use serde::{Deserialize, Serialize};

use super::TransferError;

/// What a `.qs-state` file records: the ranges of a part file received and verified, one
/// bit each (at most 128 KiB for the most ranges a file may have).
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(super) struct PartState {
    size: u64,
    range_size: u64,
    hash: Hash,
    /// Bit `i % 8` of byte `i / 8` is set when range `i` is stored.
    done: Vec<u8>,
}

impl PartState {
    pub(super) fn fresh(size: u64, range_size: u64, hash: Hash, count: usize) -> Self {
        Self {
            size,
            range_size,
            hash,
            done: vec![0; count.div_ceil(8)],
        }
    }

    /// Whether this state describes the same transfer.
    pub(super) fn fits(&self, other: &Self) -> bool {
        self.size == other.size
            && self.range_size == other.range_size
            && self.hash == other.hash
            && self.done.len() == other.done.len()
    }

    pub(super) fn is_done(&self, index: usize) -> bool {
        self.done
            .get(index / 8)
            .is_some_and(|b| b & (1 << (index % 8)) != 0)
    }

    pub(super) fn set_done(&mut self, index: usize) {
        if let Some(b) = self.done.get_mut(index / 8) {
            *b |= 1 << (index % 8);
        }
    }

    /// The ranges not stored yet, as runs.
    pub(super) fn missing(&self, count: usize) -> Vec<RangeRun> {
        runs((0..count).filter(|&i| !self.is_done(i)).map(|i| i as u32))
    }
}

/// A state file longer than this is not one of ours: 128 KiB of bits and a header.
pub(super) const MAX_STATE_LEN: u64 = (MAX_RANGES_PER_FILE / 8) + 1024;
/// A resumed file whose missing ranges fall into more runs than this is sent whole again:
/// the answer stays small whatever a state file holds.
pub(super) const MAX_RUNS_PER_FILE: usize = 4096;

/// Checks a received range against the file's plan and the sender's hash; the whole-file
/// hash, the file's range count and the range's chaining value.
pub(super) fn check_range(
    entry: &FileEntry,
    range: ByteRange,
    range_size: u64,
    data: &[u8],
    range_hash: &Hash,
) -> Result<(Hash, usize, Hash), TransferError> {
    let whole = entry.hash.ok_or_else(|| TransferError::Integrity {
        path: entry.path.clone(),
        detail: "a ranged file needs its whole-file hash".into(),
    })?;
    let count = ranges_of(entry, range_size)?;
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
    let actual = crate::files::tree::range_hash(range.offset, data);
    if &actual != range_hash {
        return Err(TransferError::Integrity {
            path: entry.path.clone(),
            detail: format!(
                "range {} hashes to {}, sender said {}",
                range.index,
                hex(&actual),
                hex(range_hash)
            ),
        });
    }
    Ok((whole, count, actual))
}

/// Opens (`resumed`) or makes a part file, sized to the file: never through a symlink, and a
/// new one exclusively (whatever stood under its name is removed first: a planted link loses
/// its name, not its target).
pub(super) fn open_part(
    entry: &FileEntry,
    part: &Path,
    resumed: bool,
) -> Result<File, TransferError> {
    let mut options = OpenOptions::new();
    options.write(true).read(true);
    no_follow(&mut options);
    if !resumed {
        let _ = fs::remove_file(part);
        options.create_new(true);
    }
    let file = options
        .open(part)
        .map_err(TransferError::io("opening", part))?;
    let meta = file
        .metadata()
        .map_err(TransferError::io("inspecting", part))?;
    if !meta.is_file() || links(&meta) != 1 {
        return Err(TransferError::Refused {
            path: entry.path.clone(),
            reason: format!("{} is not a file of its own", part.display()),
        });
    }
    if meta.len() != entry.size {
        file.set_len(entry.size)
            .map_err(TransferError::io("sizing", part))?;
    }
    Ok(file)
}

/// The part and state files of a ranged transfer. The content hash is in the names, so two
/// uploads of different content to one name never mix their ranges.
pub(super) fn part_paths(target: &Path, hash: &Hash) -> (PathBuf, PathBuf) {
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

/// The number of ranges of `entry`, checked against the protocol's maximum.
pub(super) fn ranges_of(entry: &FileEntry, range_size: u64) -> Result<usize, TransferError> {
    check_ranges(entry.size, range_size)
        .map(|n| n as usize)
        .map_err(|asked| TransferError::LimitExceeded {
            limit: "ranges per file",
            max: MAX_RANGES_PER_FILE,
            asked,
        })
}

/// A state file, if it is a regular file of a plausible size that decodes.
pub(super) fn read_state(path: &Path) -> Option<PartState> {
    use std::io::Read as _;
    let mut options = OpenOptions::new();
    options.read(true);
    no_follow(&mut options);
    let file = options.open(path).ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() || meta.len() > MAX_STATE_LEN {
        return None;
    }
    let mut bytes = Vec::new();
    file.take(MAX_STATE_LEN).read_to_end(&mut bytes).ok()?;
    postcard::from_bytes(&bytes).ok()
}

pub(super) fn write_state(path: &Path, state: &PartState) -> Result<(), TransferError> {
    let bytes = quicswarm_proto::codec::body_to_vec(state).map_err(|e| TransferError::Io {
        action: "encoding",
        path: path.to_path_buf(),
        message: e.to_string(),
        kind: std::io::ErrorKind::InvalidData,
    })?;
    let (temp, mut f) = super::commit::TempFile::create(path)?;
    f.write_all(&bytes)
        .map_err(TransferError::io("writing", temp.path()))?;
    drop(f);
    temp.commit(path)
}

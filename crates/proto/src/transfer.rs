//! File transfer: manifests, selections, and the pure planning of a swarm job.
//!
//! A job is cut into [`Unit`]s: many small files travel together in one batch (no round trip
//! per file), big files are cut into fixed-size ranges that can travel on different
//! connections at once. Planning is deterministic and does no I/O.

use serde::{Deserialize, Serialize};

use crate::ErrorReply;

/// A BLAKE3 hash.
pub type Hash = [u8; 32];

/// Default range size for big files: 4 MiB.
pub const DEFAULT_RANGE_SIZE: u64 = 4 * 1024 * 1024;
/// Default batch limits for small files.
pub const DEFAULT_BATCH_BYTES: u64 = 2 * 1024 * 1024;
/// Default most files per batch.
pub const DEFAULT_BATCH_FILES: usize = 256;
/// Entries per [`ListFrame::Entries`] frame.
pub const LIST_CHUNK: usize = 1024;

/// Modification time: seconds and nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Mtime {
    /// Whole seconds (negative before 1970).
    pub secs: i64,
    /// Nanoseconds, below 1e9.
    pub nanos: u32,
}

/// One regular file: where it is and what it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Path relative to the root, `/`-separated, validated by [`crate::path::validate`].
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Modification time.
    pub mtime: Mtime,
    /// Unix permission bits (`0o7777` at most).
    pub mode: u32,
    /// BLAKE3 of the whole content, when asked for.
    pub hash: Option<Hash>,
}

/// Which files of a root.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Selector {
    /// Start in this folder of the root (`""` for the root itself).
    pub dir: String,
    /// A glob (`**/*.log`), matched against paths relative to the root.
    pub glob: Option<String>,
    /// A regular expression, matched against paths relative to the root.
    pub regex: Option<String>,
    /// Explicit paths relative to the root; when non-empty, only these (and files under
    /// these folders) are considered.
    #[serde(deserialize_with = "crate::limits::bounded")]
    pub paths: Vec<String>,
    /// Descend into sub-folders.
    pub recursive: bool,
}

impl Selector {
    /// Everything below the root.
    pub fn all() -> Self {
        Self {
            recursive: true,
            ..Self::default()
        }
    }
}

/// A byte range of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ByteRange {
    /// The range's index: `offset / range_size`.
    pub index: u32,
    /// First byte.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
}

/// One item of a `Get` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetItem {
    /// Path relative to the root.
    pub path: String,
    /// A range, or `None` for the whole file.
    pub range: Option<ByteRange>,
}

/// One item of a `Put` request; its raw bytes follow the request, in item order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutItem {
    /// The whole file (with `hash` set).
    pub entry: FileEntry,
    /// A range, or `None` for the whole file.
    pub range: Option<ByteRange>,
    /// Hash of this item's bytes. A whole file: its BLAKE3 (equal to `entry.hash`). A range:
    /// its BLAKE3 *chaining value* as the subtree at its offset (`blake3::hazmat`:
    /// `set_input_offset(offset)`, `finalize_non_root`) when the range is a subtree of
    /// BLAKE3's tree — its offset a multiple of 1 KiB and its length at most the largest
    /// subtree starting there — and its plain BLAKE3 otherwise. With power-of-two range sizes
    /// every range is a subtree, so the receiver merges the ranges' values into the file's
    /// BLAKE3 instead of hashing the assembled file again.
    pub hash: Hash,
}

/// What a receiver still needs of a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Need {
    /// Already present with the right size and hash.
    Skip,
    /// The whole file.
    Whole,
    /// These ranges (the others were received and verified before), as runs of indices: a
    /// file resumed after a cut usually misses one run, whatever its size.
    Ranges(#[serde(deserialize_with = "crate::limits::bounded")] Vec<RangeRun>),
}

/// Consecutive range indices `first .. first + count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeRun {
    /// The first index.
    pub first: u32,
    /// How many.
    pub count: u32,
}

impl RangeRun {
    /// The indices of the run.
    pub fn indices(self) -> impl Iterator<Item = u32> + Clone {
        (u64::from(self.first)..u64::from(self.first) + u64::from(self.count))
            .map(|i| u32::try_from(i).unwrap_or(u32::MAX))
    }

    /// Whether `index` is in the run.
    pub fn contains(self, index: u32) -> bool {
        index >= self.first && u64::from(index) < u64::from(self.first) + u64::from(self.count)
    }
}

/// Runs of consecutive indices from ascending `indices`.
pub fn runs(indices: impl IntoIterator<Item = u32>) -> Vec<RangeRun> {
    let mut out: Vec<RangeRun> = Vec::new();
    for i in indices {
        match out.last_mut() {
            Some(run) if u64::from(run.first) + u64::from(run.count) == u64::from(i) => {
                run.count += 1;
            }
            _ => out.push(RangeRun { first: i, count: 1 }),
        }
    }
    out
}

/// Frames after `Response::Accepted` to a `List` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ListFrame {
    /// Up to [`LIST_CHUNK`] entries.
    Entries(#[serde(deserialize_with = "crate::limits::bounded")] Vec<FileEntry>),
    /// The end; `skipped` counts entries left out (symlinks, special files, non-portable
    /// names).
    End {
        /// Entries left out.
        skipped: u64,
    },
    /// The listing failed.
    Error(ErrorReply),
}

/// Frames after `Response::Accepted` to a `Get` request, one group per item in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileFrame {
    /// `len` raw bytes of item `index` follow, then a [`FileFrame::Hash`].
    Data {
        /// Item index in the request.
        index: u32,
        /// Bytes that follow.
        len: u64,
        /// The file's size, mtime and mode now.
        size: u64,
        /// Modification time.
        mtime: Mtime,
        /// Permission bits.
        mode: u32,
    },
    /// Hash of the bytes just sent: as [`PutItem::hash`] (BLAKE3 of a whole file, the
    /// chaining value of a range).
    Hash(Hash),
    /// This item could not be read; the batch goes on.
    Failed {
        /// Item index in the request.
        index: u32,
        /// Why.
        error: ErrorReply,
    },
    /// All items were sent.
    End,
}

/// Number of ranges of a file of `size` bytes (at least one). Never truncated: check it
/// against [`MAX_RANGES_PER_FILE`](crate::limits::MAX_RANGES_PER_FILE) (see
/// [`check_ranges`]) before planning or allocating anything per range.
pub fn range_count(size: u64, range_size: u64) -> u64 {
    size.div_ceil(range_size.max(1)).max(1)
}

/// The number of ranges of a file, if it is within
/// [`MAX_RANGES_PER_FILE`](crate::limits::MAX_RANGES_PER_FILE).
///
/// # Errors
/// The count, when it is over the maximum.
pub fn check_ranges(size: u64, range_size: u64) -> Result<u32, u64> {
    let count = range_count(size, range_size);
    if count > crate::limits::MAX_RANGES_PER_FILE {
        return Err(count);
    }
    u32::try_from(count).map_err(|_| count)
}

/// Whether `range_size` may be used for an upload: a power of two from
/// [`MIN_RANGE_SIZE`](crate::limits::MIN_RANGE_SIZE) to
/// [`MAX_RANGE_SIZE`](crate::limits::MAX_RANGE_SIZE).
///
/// # Errors
/// A sentence saying what is allowed.
pub fn check_range_size(range_size: u64) -> Result<(), String> {
    use crate::limits::{MAX_RANGE_SIZE, MIN_RANGE_SIZE};
    if range_size.is_power_of_two() && (MIN_RANGE_SIZE..=MAX_RANGE_SIZE).contains(&range_size) {
        Ok(())
    } else {
        Err(format!(
            "range size must be a power of two from {MIN_RANGE_SIZE} to {MAX_RANGE_SIZE} bytes, \
             not {range_size}"
        ))
    }
}

/// The range `index` of a file.
pub fn range_at(size: u64, range_size: u64, index: u32) -> ByteRange {
    let rs = range_size.max(1);
    let offset = u64::from(index).saturating_mul(rs);
    ByteRange {
        index,
        offset,
        len: rs.min(size.saturating_sub(offset)),
    }
}

/// The ranges of a file, in order. Callers check the count first ([`check_ranges`]).
pub fn ranges(size: u64, range_size: u64) -> impl Iterator<Item = ByteRange> {
    let count = u32::try_from(range_count(size, range_size)).unwrap_or(u32::MAX);
    (0..count).map(move |index| range_at(size, range_size, index))
}

/// Whether a file travels in ranges rather than whole.
pub fn is_ranged(size: u64, range_size: u64) -> bool {
    size > range_size
}

/// One piece of work for one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unit {
    /// Several whole files (indices into the job's file list).
    Batch(Vec<usize>),
    /// One range of one file.
    Range {
        /// Index into the job's file list.
        file: usize,
        /// The range.
        range: ByteRange,
    },
}

/// Cuts a job into units. `needs[i]` says what file `i` (of `sizes[i]` bytes) still needs.
/// The caller has checked every ranged file's count against
/// [`MAX_RANGES_PER_FILE`](crate::limits::MAX_RANGES_PER_FILE), the runs of every
/// `Need::Ranges` against that count, and the total against its own budget.
/// Ranges come first (largest files first) so the long poles start early; batches hold at
/// most `batch_files` files and about `batch_bytes` bytes.
pub fn plan(
    sizes: &[u64],
    needs: &[Need],
    range_size: u64,
    batch_bytes: u64,
    batch_files: usize,
) -> Vec<Unit> {
    let mut ranged: Vec<usize> = Vec::new();
    let mut batch: Vec<usize> = Vec::new();
    let mut batch_size = 0u64;
    let mut units = Vec::new();
    let mut batches = Vec::new();
    for (i, (&size, need)) in sizes.iter().zip(needs).enumerate() {
        match need {
            Need::Skip => {}
            Need::Ranges(_) => ranged.push(i),
            Need::Whole if is_ranged(size, range_size) => ranged.push(i),
            Need::Whole => {
                if !batch.is_empty()
                    && (batch.len() >= batch_files.max(1) || batch_size + size > batch_bytes)
                {
                    batches.push(Unit::Batch(std::mem::take(&mut batch)));
                    batch_size = 0;
                }
                batch.push(i);
                batch_size += size;
            }
        }
    }
    if !batch.is_empty() {
        batches.push(Unit::Batch(batch));
    }
    ranged.sort_by_key(|&i| std::cmp::Reverse(sizes[i]));
    for i in ranged {
        match &needs[i] {
            Need::Ranges(runs) => {
                let count = range_count(sizes[i], range_size);
                for index in runs.iter().flat_map(|r| r.indices()) {
                    if u64::from(index) < count {
                        let range = range_at(sizes[i], range_size, index);
                        units.push(Unit::Range { file: i, range });
                    }
                }
            }
            _ => units
                .extend(ranges(sizes[i], range_size).map(|range| Unit::Range { file: i, range })),
        }
    }
    units.extend(batches);
    units
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_the_file_exactly() {
        let r: Vec<_> = ranges(25, 10).collect();
        assert_eq!(
            r,
            vec![
                ByteRange {
                    index: 0,
                    offset: 0,
                    len: 10
                },
                ByteRange {
                    index: 1,
                    offset: 10,
                    len: 10
                },
                ByteRange {
                    index: 2,
                    offset: 20,
                    len: 5
                }
            ]
        );
        assert_eq!(ranges(0, 10).count(), 1);
        assert_eq!(range_count(20, 10), 2);
        // Never truncated: 2^52 bytes in 1-byte ranges.
        assert_eq!(range_count(1 << 52, 1), 1 << 52);
        assert_eq!(check_ranges(1 << 52, 1), Err(1 << 52));
        assert_eq!(check_ranges(4 << 20, 4), Ok(1 << 20));
        assert_eq!(check_ranges((4 << 20) + 1, 4), Err((1 << 20) + 1));
    }

    #[test]
    fn runs_compress_consecutive_indices() {
        let r = runs([0, 1, 2, 5, 7, 8]);
        assert_eq!(
            r,
            vec![
                RangeRun { first: 0, count: 3 },
                RangeRun { first: 5, count: 1 },
                RangeRun { first: 7, count: 2 }
            ]
        );
        let back: Vec<u32> = r.iter().flat_map(|r| r.indices()).collect();
        assert_eq!(back, vec![0, 1, 2, 5, 7, 8]);
        assert!(r[2].contains(8) && !r[2].contains(9) && !r[0].contains(3));
        assert!(runs([]).is_empty());
    }

    #[test]
    fn range_sizes_for_uploads_are_powers_of_two_within_bounds() {
        assert!(check_range_size(4 << 20).is_ok());
        assert!(check_range_size(64 << 10).is_ok());
        assert!(check_range_size(16 << 20).is_ok());
        for bad in [0, 1, 4096, 100_000, 32 << 20, 3 << 20] {
            assert!(check_range_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn plan_batches_small_files_and_splits_big_ones() {
        let sizes = [5, 5, 5, 30, 5, 0];
        let needs = vec![
            Need::Whole,
            Need::Skip,
            Need::Whole,
            Need::Whole,
            Need::Whole,
            Need::Whole,
        ];
        let units = plan(&sizes, &needs, 10, 10, 2);
        assert_eq!(
            units,
            vec![
                Unit::Range {
                    file: 3,
                    range: ByteRange {
                        index: 0,
                        offset: 0,
                        len: 10
                    }
                },
                Unit::Range {
                    file: 3,
                    range: ByteRange {
                        index: 1,
                        offset: 10,
                        len: 10
                    }
                },
                Unit::Range {
                    file: 3,
                    range: ByteRange {
                        index: 2,
                        offset: 20,
                        len: 10
                    }
                },
                Unit::Batch(vec![0, 2]),
                Unit::Batch(vec![4, 5]),
            ]
        );
        let resumed = plan(
            &[30],
            &[Need::Ranges(vec![RangeRun { first: 2, count: 1 }])],
            10,
            10,
            2,
        );
        assert_eq!(
            resumed,
            vec![Unit::Range {
                file: 0,
                range: ByteRange {
                    index: 2,
                    offset: 20,
                    len: 10
                }
            }]
        );
    }
}

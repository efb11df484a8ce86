//! BLAKE3 of a big file from the hashes of its ranges, without reading it again.
//!
//! BLAKE3 hashes a tree of 1 KiB chunks. A range whose offset and length fit that tree (for
//! example every range of a power-of-two range size) is a subtree, and its *chaining value*
//! (the subtree's hash, not final) is what the sender announces for it. The receiver checks
//! each range against its chaining value as it arrives, and once all are in, merges them into
//! the file's BLAKE3 and compares that with the sender's whole-file hash — which used to take
//! a second read and hash of the whole assembled file. A range that is not a subtree (an odd
//! range size) is announced with its plain BLAKE3 instead, and the file is then hashed whole.

use std::fs::File;

use blake3::hazmat::{self, HasherExt as _, Mode};
use quicswarm_proto::transfer::{range_count, Hash};

const CHUNK_LEN: u64 = blake3::CHUNK_LEN as u64;

/// The hash a sender announces for `data`, the bytes at `offset` of a file sent in ranges:
/// their BLAKE3 chaining value when they are a subtree of BLAKE3's tree (an offset that is a
/// multiple of 1 KiB, a length at most the largest subtree starting there), their plain
/// BLAKE3 otherwise. For peers that speak the protocol themselves.
///
/// ```
/// use quicswarm::files::range_hash;
///
/// let file = vec![7u8; 3 * 4096];
/// // A range at the start is a subtree: a chaining value, not the plain hash.
/// assert_ne!(range_hash(0, &file[..4096]), *blake3::hash(&file[..4096]).as_bytes());
/// // A range starting mid-chunk is not: its plain BLAKE3.
/// assert_eq!(range_hash(100, &file[100..200]), *blake3::hash(&file[100..200]).as_bytes());
/// ```
pub fn range_hash(offset: u64, data: &[u8]) -> Hash {
    if is_subtree(offset, data.len() as u64) {
        let mut hasher = blake3::Hasher::new();
        hasher.set_input_offset(offset);
        hasher.update(data);
        hasher.finalize_non_root()
    } else {
        *blake3::hash(data).as_bytes()
    }
}

/// Whether `len` bytes at `offset` form a subtree (hashing them as one would otherwise panic
/// or give a value no merge can use).
pub(crate) fn is_subtree(offset: u64, len: u64) -> bool {
    len > 0
        && offset.is_multiple_of(CHUNK_LEN)
        && hazmat::max_subtree_len(offset).is_none_or(|max| len <= max)
}

/// The BLAKE3 of a file of `size` bytes from the chaining values of all its ranges, in
/// order; `None` when its ranges are not subtrees that merge (a range size that is not a
/// power of two of at least 1 KiB, a single range, or a wrong count).
pub(crate) fn merge(cvs: &[Hash], range_size: u64, size: u64) -> Option<Hash> {
    if !range_size.is_power_of_two()
        || range_size < CHUNK_LEN
        || cvs.len() < 2
        || cvs.len() != range_count(size, range_size) as usize
    {
        return None;
    }
    let (left, right, left_len) = split(cvs, range_size, size);
    let root = hazmat::merge_subtrees_root(
        &subtree(left, range_size, left_len),
        &subtree(right, range_size, size - left_len),
        Mode::Hash,
    );
    Some(*root.as_bytes())
}

/// The chaining value of the subtree made of `cvs` (ranges covering `len` bytes).
fn subtree(cvs: &[Hash], range_size: u64, len: u64) -> Hash {
    if let [only] = cvs {
        return *only;
    }
    let (left, right, left_len) = split(cvs, range_size, len);
    hazmat::merge_subtrees_non_root(
        &subtree(left, range_size, left_len),
        &subtree(right, range_size, len - left_len),
        Mode::Hash,
    )
}

/// BLAKE3's split of `len` bytes (more than one range): its left subtree is a power of two
/// of at least `range_size`, so a whole number of ranges.
fn split(cvs: &[Hash], range_size: u64, len: u64) -> (&[Hash], &[Hash], u64) {
    let left_len = hazmat::left_subtree_len(len);
    let n = ((left_len / range_size) as usize).clamp(1, cvs.len() - 1);
    (&cvs[..n], &cvs[n..], left_len)
}

/// Pieces of a file hashed whole for a listing: a range made of whole pieces then gets its
/// hash by merging theirs, without hashing its bytes again when it is served.
pub(crate) const PIECE: u64 = 1 << 20;

/// Bytes read at once per thread by [`hash_pieces`]: a few pieces, so reads stay large.
const BLOCK: u64 = 4 * PIECE;

/// The BLAKE3 of `size` bytes of `file`, read once, and the chaining values of its pieces
/// (none for a file of one piece). Big files are read and hashed on every core, block by
/// block: measured on a 1 GiB file in the page cache here, 0.19-0.21 s, where one thread
/// reading 1 MiB pieces and hashing each with rayon took 0.30-0.45 s (and BLAKE3's own
/// memory-mapped hashing on all cores, which cannot give the pieces, 0.13-0.16 s).
pub(crate) fn hash_pieces(file: &File, size: u64) -> std::io::Result<(Hash, Vec<Hash>)> {
    if size <= PIECE {
        // Positioned read: whatever the handle's position, the file is read from its start.
        let mut data = vec![0u8; size as usize];
        read_exact_at(file, &mut data, 0)?;
        return Ok((*blake3::hash(&data).as_bytes(), Vec::new()));
    }
    let mut pieces = vec![[0u8; 32]; size.div_ceil(PIECE) as usize];
    let blocks: Vec<(u64, &mut [Hash])> = pieces
        .chunks_mut((BLOCK / PIECE) as usize)
        .enumerate()
        .map(|(i, out)| (i as u64 * BLOCK, out))
        .collect();
    let threads = std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .min(blocks.len());
    let mut shares: Vec<Vec<(u64, &mut [Hash])>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, block) in blocks.into_iter().enumerate() {
        shares[i % threads].push(block);
    }
    std::thread::scope(|scope| {
        let workers: Vec<_> = shares
            .into_iter()
            .map(|share| scope.spawn(move || hash_blocks(file, size, share)))
            .collect();
        workers.into_iter().try_for_each(|w| {
            w.join()
                .map_err(|_| std::io::Error::other("a hashing thread panicked"))?
        })
    })?;
    let whole =
        merge(&pieces, PIECE, size).ok_or_else(|| std::io::Error::other("pieces do not merge"))?;
    Ok((whole, pieces))
}

/// Reads each block (at its offset) and writes the chaining values of its pieces.
fn hash_blocks(file: &File, size: u64, blocks: Vec<(u64, &mut [Hash])>) -> std::io::Result<()> {
    let mut buf = vec![0u8; BLOCK as usize];
    for (offset, out) in blocks {
        let len = BLOCK.min(size - offset) as usize;
        read_exact_at(file, &mut buf[..len], offset)?;
        for ((i, piece), cv) in buf[..len].chunks(PIECE as usize).enumerate().zip(out) {
            let mut hasher = blake3::Hasher::new();
            hasher.set_input_offset(offset + i as u64 * PIECE);
            hasher.update(piece);
            *cv = hasher.finalize_non_root();
        }
    }
    Ok(())
}

#[cfg(unix)]
pub(crate) fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(not(unix))]
pub(crate) fn read_exact_at(mut file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    use std::io::{Read as _, Seek as _};
    file.seek(std::io::SeekFrom::Start(offset))?;
    file.read_exact(buf)
}

/// The [`range_hash`] of the `len` bytes at `offset` of a file of `size` bytes, from its
/// pieces' values, when that range is made of whole pieces (the file's last may be short)
/// and is a subtree; `None` otherwise.
pub(crate) fn range_from_pieces(pieces: &[Hash], size: u64, offset: u64, len: u64) -> Option<Hash> {
    let end = offset.checked_add(len)?;
    if !offset.is_multiple_of(PIECE)
        || !(end == size || end.is_multiple_of(PIECE))
        || !is_subtree(offset, len)
    {
        return None;
    }
    let cvs = pieces.get((offset / PIECE) as usize..end.div_ceil(PIECE) as usize)?;
    if cvs.is_empty() {
        return None;
    }
    Some(subtree(cvs, PIECE, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(data: &[u8], range_size: u64) -> Vec<Hash> {
        data.chunks(range_size as usize)
            .enumerate()
            .map(|(i, r)| range_hash(i as u64 * range_size, r))
            .collect()
    }

    #[test]
    fn merged_range_hashes_equal_the_files_blake3() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + i / 1000) as u8).collect();
        for range_size in [1024u64, 4096, 65536] {
            for size in [
                range_size + 1,
                2 * range_size - 1,
                2 * range_size,
                2 * range_size + 1,
                3 * range_size,
                5 * range_size + 7,
                8 * range_size,
                8 * range_size + 1,
                13 * range_size - 1,
                300_000,
            ] {
                let file = &data[..size.min(300_000) as usize];
                let merged = merge(&ranges(file, range_size), range_size, file.len() as u64);
                assert_eq!(
                    merged,
                    Some(*blake3::hash(file).as_bytes()),
                    "range size {range_size}, {} bytes",
                    file.len()
                );
            }
        }
    }

    #[test]
    fn ranges_of_whole_pieces_get_their_hash_from_the_pieces() {
        let size = 5 * PIECE + 12_345;
        let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        std::fs::write(&path, &data).unwrap();
        let file = File::open(&path).unwrap();
        let (whole, pieces) = hash_pieces(&file, size).unwrap();
        assert_eq!(whole, *blake3::hash(&data).as_bytes());
        assert_eq!(pieces.len(), 6);
        for (offset, len) in [
            (0, PIECE),
            (0, 2 * PIECE),
            (0, 4 * PIECE),
            (2 * PIECE, 2 * PIECE),
            (4 * PIECE, size - 4 * PIECE),
            (5 * PIECE, size - 5 * PIECE),
        ] {
            let slice = &data[offset as usize..(offset + len) as usize];
            assert_eq!(
                range_from_pieces(&pieces, size, offset, len),
                Some(range_hash(offset, slice)),
                "{offset}+{len}"
            );
        }
        // Not whole pieces, or not a subtree: computed from the bytes instead.
        for (offset, len) in [(0, PIECE / 2), (PIECE, 2 * PIECE), (PIECE, PIECE + 1)] {
            assert_eq!(range_from_pieces(&pieces, size, offset, len), None);
        }

        // A small file through a handle already read to its end is still hashed whole.
        let small_path = dir.path().join("small");
        std::fs::write(&small_path, &data[..5000]).unwrap();
        let mut small = File::open(&small_path).unwrap();
        std::io::Read::read_to_end(&mut small, &mut Vec::new()).unwrap();
        assert_eq!(
            hash_pieces(&small, 5000).unwrap(),
            (*blake3::hash(&data[..5000]).as_bytes(), Vec::new())
        );
    }

    #[test]
    fn a_changed_range_changes_the_merged_hash() {
        let mut data = vec![1u8; 40_000];
        let good = merge(&ranges(&data, 4096), 4096, 40_000);
        data[20_000] ^= 1;
        assert_ne!(merge(&ranges(&data, 4096), 4096, 40_000), good);
    }

    #[test]
    fn ranges_that_are_not_subtrees_get_their_plain_hash_and_do_not_merge() {
        let data = vec![3u8; 10_000];
        // 3,000 is not a multiple of a chunk: the second range starts mid-chunk.
        assert_eq!(
            range_hash(3000, &data[3000..6000]),
            *blake3::hash(&data[3000..6000]).as_bytes()
        );
        // A range longer than the subtree its offset begins.
        assert_eq!(
            range_hash(1024, &data[1024..4096]),
            *blake3::hash(&data[1024..4096]).as_bytes()
        );
        assert_eq!(merge(&ranges(&data, 3000), 3000, 10_000), None);
        assert_eq!(merge(&ranges(&data, 512), 512, 10_000), None);
        // A wrong count, or a single range, does not merge either.
        assert_eq!(merge(&ranges(&data, 4096)[..2], 4096, 10_000), None);
        assert_eq!(merge(&ranges(&data, 16384), 16384, 10_000), None);
    }
}

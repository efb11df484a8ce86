//! Writing a range of a big file past the page cache.
//!
//! Through the page cache, a write copies every byte into cache pages the kernel first
//! allocates, and those pages must later be written back and dropped: on the machines
//! measured here that costs more CPU than receiving the bytes (`files` bench). A receiver
//! that syncs everything and keeps nothing cached gains nothing from the cache, so on Linux
//! the page-aligned part of a range goes straight from its (page-aligned, see
//! `files/buffers.rs`) buffer to the disk with `O_DIRECT`. Whatever is left (an unaligned
//! tail, a filesystem without direct I/O, an unaligned buffer) goes through the cache as
//! before. Durability is unchanged: the part file is synced before its rename either way.

use std::fs::File;

/// Writes `data` at `offset` of `file`; returns how many bytes (at the end of `data`) went
/// through the page cache, which the caller may want written back early.
pub(super) fn write_at(file: &File, data: &[u8], offset: u64) -> std::io::Result<usize> {
    let direct = direct_part(file, data, offset)?;
    let rest = &data[direct..];
    if !rest.is_empty() {
        write_cached(file, rest, offset + direct as u64)?;
    }
    Ok(rest.len())
}

/// Writes the page-aligned head of `data` with direct I/O where it can; returns its length
/// (0 when nothing could go that way).
#[cfg(target_os = "linux")]
fn direct_part(file: &File, data: &[u8], offset: u64) -> std::io::Result<usize> {
    use rustix::fs::{fcntl_getfl, fcntl_setfl, OFlags};
    use std::os::unix::fs::FileExt;

    use crate::files::buffers::ALIGN;

    let len = data.len() / ALIGN * ALIGN;
    let aligned =
        (data.as_ptr() as usize).is_multiple_of(ALIGN) && offset.is_multiple_of(ALIGN as u64);
    if len == 0 || !aligned {
        return Ok(0);
    }
    let flags = fcntl_getfl(file)?;
    // Filesystems without direct I/O refuse the flag: the cache it is.
    if fcntl_setfl(file, flags | OFlags::DIRECT).is_err() {
        return Ok(0);
    }
    let written = file.write_all_at(&data[..len], offset);
    // Back to cached writes for whatever follows on this handle.
    fcntl_setfl(file, flags)?;
    match written {
        Ok(()) => Ok(len),
        // A device whose blocks are bigger than a page refuses the alignment: the cache it is.
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => Ok(0),
        Err(e) => Err(e),
    }
}

#[cfg(not(target_os = "linux"))]
fn direct_part(_file: &File, _data: &[u8], _offset: u64) -> std::io::Result<usize> {
    Ok(0)
}

#[cfg(unix)]
fn write_cached(file: &File, data: &[u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, data, offset)
}

#[cfg(not(unix))]
fn write_cached(mut file: &File, data: &[u8], offset: u64) -> std::io::Result<()> {
    use std::io::{Seek, Write};
    file.seek(std::io::SeekFrom::Start(offset))?;
    file.write_all(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::buffers::{BufferPool, ALIGN};

    /// Aligned and unaligned pieces, with and without a tail, land where they belong.
    #[test]
    fn every_byte_lands_at_its_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("part");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let total = 4 * ALIGN * 4 + 100;
        file.set_len(total as u64).unwrap();
        let content: Vec<u8> = (0..total).map(|i| (i % 251) as u8).collect();
        let pool = BufferPool::new(4 * ALIGN, 2);
        let mut cached = Vec::new();
        // Aligned pieces (the last with a tail), then an unaligned rewrite of the middle.
        for (start, len) in [
            (0, 4 * ALIGN),
            (4 * ALIGN, 4 * ALIGN),
            (12 * ALIGN, 4 * ALIGN + 100),
            (8 * ALIGN, 4 * ALIGN),
            (100, 3 * ALIGN),
        ] {
            let mut buf = pool.take(len);
            buf.as_mut_slice()
                .copy_from_slice(&content[start..start + len]);
            cached.push(write_at(&file, buf.as_ref(), start as u64).unwrap());
        }
        assert_eq!(std::fs::read(&path).unwrap(), content);
        // Only the tail and the unaligned piece needed the cache, where the filesystem takes
        // direct I/O; elsewhere everything goes through it.
        if direct_io_works(&path) {
            assert_eq!(cached, [0, 0, 100, 0, 3 * ALIGN]);
        } else {
            assert_eq!(
                cached,
                [4 * ALIGN, 4 * ALIGN, 4 * ALIGN + 100, 4 * ALIGN, 3 * ALIGN]
            );
        }
    }

    fn direct_io_works(path: &std::path::Path) -> bool {
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
                .open(path)
                .is_ok()
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = path;
            false
        }
    }
}

//! Page-aligned buffers for big pieces of files, reused from one piece to the next.
//!
//! A big file moves in pieces of a few MiB. Allocated fresh, each piece's buffer is new memory
//! that the kernel must find, zero and map page by page (and on a virtual machine the host
//! often must too); reused, it is already there. Page alignment lets a receiver write a piece
//! to disk with direct I/O, past the page cache (see `dest/direct.rs`).

use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;

/// Where a buffer's bytes start: on a page, which direct I/O needs (more than any device's
/// logical block).
pub(crate) const ALIGN: usize = 4096;

/// Buffers of one size, kept for reuse when dropped.
#[derive(Debug)]
pub(crate) struct BufferPool {
    /// Usable bytes of a pooled buffer.
    size: usize,
    /// Most idle buffers kept; the rest are freed.
    keep: usize,
    free: Mutex<Vec<Vec<u8>>>,
}

impl BufferPool {
    /// A pool of buffers of `size` bytes, keeping at most `keep` of them idle.
    pub(crate) fn new(size: usize, keep: usize) -> Arc<Self> {
        Arc::new(Self {
            size,
            keep,
            free: Mutex::default(),
        })
    }

    /// Whether buffers of `len` bytes come from the pool: only of its exact size (a piece
    /// read ahead, a full range), so a buffer never holds more memory than what it carries
    /// is charged for.
    pub(crate) fn pools(&self, len: usize) -> bool {
        len == self.size
    }

    /// A page-aligned buffer of `len` bytes: a pooled one when the pool [`pools`](Self::pools)
    /// that length, otherwise one of its own (`len` and a page). Its content is whatever it
    /// held before: fill all of it before use.
    pub(crate) fn take(self: &Arc<Self>, len: usize) -> Buffer {
        let pooled = self.pools(len);
        let reused = pooled
            .then(|| {
                self.free
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .pop()
            })
            .flatten();
        // Zeroed by the allocator (for big sizes: fresh pages the kernel zeroes on first
        // touch), so no byte is ever uninitialised.
        let raw = reused.unwrap_or_else(|| vec![0; len + ALIGN]);
        // `align_offset` may decline (`usize::MAX`): the buffer is then unaligned, which only
        // costs direct I/O (the writer checks).
        let start = match raw.as_ptr().align_offset(ALIGN) {
            n if n < ALIGN => n,
            _ => 0,
        };
        Buffer {
            raw,
            start,
            len,
            home: pooled.then(|| self.clone()),
        }
    }
}

/// A buffer from a [`BufferPool`]; back in the pool when dropped.
#[derive(Debug)]
pub(crate) struct Buffer {
    raw: Vec<u8>,
    start: usize,
    len: usize,
    home: Option<Arc<BufferPool>>,
}

impl Buffer {
    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.raw[self.start..self.start + self.len]
    }

    /// As `Bytes`, without a copy: the buffer goes back to its pool when the last `Bytes`
    /// made from it is dropped.
    pub(crate) fn freeze(self) -> Bytes {
        Bytes::from_owner(self)
    }
}

impl AsRef<[u8]> for Buffer {
    fn as_ref(&self) -> &[u8] {
        &self.raw[self.start..self.start + self.len]
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        if let Some(pool) = self.home.take() {
            let mut free = pool.free.lock().unwrap_or_else(PoisonError::into_inner);
            if free.len() < pool.keep {
                free.push(std::mem::take(&mut self.raw));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_aligned_and_reused() {
        let pool = BufferPool::new(1 << 20, 1);
        let mut a = pool.take(1 << 20);
        assert_eq!(a.as_mut_slice().as_ptr() as usize % ALIGN, 0);
        a.as_mut_slice()[0] = 7;
        let first = a.as_ref().as_ptr();
        let bytes = a.freeze();
        assert_eq!(bytes.len(), 1 << 20);
        assert_eq!(bytes[0], 7);
        drop(bytes);
        // The same memory comes back.
        let b = pool.take(1 << 20);
        assert_eq!(b.as_ref().as_ptr(), first);
        assert_eq!(b.as_ref().len(), 1 << 20);
        // Only `keep` idle buffers are kept.
        let c = pool.take(1 << 20);
        drop(b);
        drop(c);
        assert_eq!(pool.free.lock().unwrap().len(), 1);
    }

    #[test]
    fn small_and_oversized_buffers_are_their_own() {
        let pool = BufferPool::new(1 << 20, 4);
        for len in [0, 100, (1 << 20) - 1, (1 << 20) + 1] {
            let b = pool.take(len);
            assert_eq!(b.as_ref().len(), len);
            assert!(b.home.is_none(), "{len} bytes should not be pooled");
            drop(b);
        }
        assert!(pool.free.lock().unwrap().is_empty());
    }
}

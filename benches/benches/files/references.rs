//! The reference rows: what the disk and the transport allow on this machine, without
//! quicswarm's file transfer.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{ensure, Context, Result};

use super::check::walk;

/// Copies `src` into `dest` as an atomic, durable receiver at least must: each file written
/// under a temporary name beside its final one, given its mode and mtime; then one `syncfs`
/// and the renames. Two threads (this machine's cores). Returns seconds.
pub(crate) fn local_copy(src: &Path, dest: &Path) -> Result<f64> {
    let mut files = Vec::new();
    walk(src, src, &mut files)?;
    let started = Instant::now();
    let half = files.len().div_ceil(2).max(1);
    let staged = std::thread::scope(|s| -> Result<Vec<(PathBuf, PathBuf)>> {
        let workers: Vec<_> = files
            .chunks(half)
            .map(|part| {
                s.spawn(move || -> Result<Vec<(PathBuf, PathBuf)>> {
                    let mut staged = Vec::with_capacity(part.len());
                    for rel in part {
                        let (from, to) = (src.join(rel), dest.join(rel));
                        if let Some(dir) = to.parent() {
                            std::fs::create_dir_all(dir)?;
                        }
                        let mut tmp = to.clone().into_os_string();
                        tmp.push(".tmp");
                        let tmp = PathBuf::from(tmp);
                        let meta = std::fs::metadata(&from)?;
                        let mut f = std::fs::File::create(&tmp)?;
                        // In the kernel where it can (copy_file_range): the cheapest copy.
                        std::io::copy(&mut std::fs::File::open(&from)?, &mut f)?;
                        f.set_permissions(meta.permissions())?;
                        f.set_modified(meta.modified()?)?;
                        staged.push((tmp, to));
                    }
                    Ok(staged)
                })
            })
            .collect();
        let mut all = Vec::new();
        for w in workers {
            all.extend(
                w.join()
                    .map_err(|_| anyhow::anyhow!("copy thread panicked"))??,
            );
        }
        Ok(all)
    })?;
    let synced = Command::new("sync")
        .arg("--file-system")
        .arg(dest)
        .status()?;
    ensure!(synced.success(), "sync --file-system failed");
    for (tmp, to) in &staged {
        std::fs::rename(tmp, to)?;
    }
    Ok(started.elapsed().as_secs_f64())
}

/// Bytes per item of the stream rows.
pub(crate) const STREAM_ITEM: usize = 64 * 1024;

/// Streams `bytes` in 64 KiB items from a gateway to a client in this process, memory to
/// memory, as W2's transport ceiling: the items are slices of `ring`, in turn (one item's
/// worth: the same bytes every time). Returns seconds.
pub(crate) async fn memory_stream(
    bytes: u64,
    ring: bytes::Bytes,
    gw: &tokio::runtime::Handle,
) -> Result<f64> {
    const ITEM: usize = STREAM_ITEM;
    let gateway = gw
        .spawn(quicswarm_tests::spawn_gateway(move |b| {
            let registry = quicswarm::demo::registry();
            registry.stream(
                "slices",
                move |count: u64, _ctx: quicswarm::StreamContext| {
                    let ring = ring.clone();
                    let slots = (ring.len() / ITEM) as u64;
                    futures_util::stream::iter((0..count).map(move |i| {
                        let at = (i % slots) as usize * ITEM;
                        Ok::<_, String>((i as i64, ring.slice(at..at + ITEM)))
                    }))
                },
            );
            b.registry(registry)
        }))
        .await?;
    let client = gateway.client().await;
    let started = Instant::now();
    let mut stream = client
        .stream("slices", &bytes.div_ceil(ITEM as u64))
        .await?;
    let mut got = 0u64;
    while let Some((_, data)) = stream.next().await? {
        got += data.len() as u64;
    }
    let secs = started.elapsed().as_secs_f64();
    ensure!(got >= bytes, "streamed {got} of {bytes} bytes");
    client.close().await?;
    gw.spawn(async move { gateway.gateway.shutdown(Duration::from_secs(1)).await })
        .await?;
    Ok(secs)
}

/// The least file work of a download, on this thread: every file below `src` read once in
/// 4 MiB pieces into one reused page-aligned buffer and hashed with BLAKE3 (what the gateway
/// does for a listing). With `store_in`, what a download's two sides do besides moving the
/// bytes: each piece read into one buffer (the gateway's read), copied into another, aligned
/// one (the receiver's copy out of the transport's buffers, which direct I/O needs), hashed
/// there and written to `store_in` as the receiver writes a range (direct I/O where the
/// filesystem takes it), each file synced. Returns seconds.
pub(crate) fn file_work(src: &Path, store_in: Option<&Path>) -> Result<f64> {
    use std::os::unix::fs::{FileExt as _, OpenOptionsExt as _};
    const PIECE: usize = 4 << 20;
    const ALIGN: usize = 4096;
    let mut files = Vec::new();
    walk(src, src, &mut files)?;
    let mut raw = vec![0u8; PIECE + ALIGN];
    let start = raw.as_ptr().align_offset(ALIGN).min(ALIGN);
    let buf = &mut raw[start..start + PIECE];
    // Where the gateway's reads land when storing (they land in `buf` otherwise).
    let mut read = vec![0u8; if store_in.is_some() { PIECE } else { 0 }];
    let started = Instant::now();
    for rel in &files {
        let file = std::fs::File::open(src.join(rel))?;
        let out = match store_in {
            Some(dir) => {
                let path = dir.join(rel);
                std::fs::create_dir_all(path.parent().context("parent")?)?;
                let cached = std::fs::File::create(&path)?;
                let direct = std::fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
                    .open(&path)
                    .ok();
                Some((cached, direct))
            }
            None => None,
        };
        let mut hasher = blake3::Hasher::new();
        let mut at = 0u64;
        loop {
            let n = if store_in.is_some() {
                let n = file.read_at(&mut read, at)?;
                buf[..n].copy_from_slice(&read[..n]);
                n
            } else {
                file.read_at(buf, at)?
            };
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            if let Some((cached, direct)) = &out {
                let aligned = n / ALIGN * ALIGN;
                let head = match direct {
                    Some(direct) if aligned > 0 => {
                        direct.write_all_at(&buf[..aligned], at)?;
                        aligned
                    }
                    _ => 0,
                };
                cached.write_all_at(&buf[head..n], at + head as u64)?;
            }
            at += n as u64;
        }
        std::hint::black_box(hasher.finalize());
        if let Some((cached, _)) = &out {
            cached.sync_all()?;
        }
    }
    Ok(started.elapsed().as_secs_f64())
}

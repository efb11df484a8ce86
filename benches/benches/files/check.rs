//! Checking a download: every file there, with the same content.

use std::path::{Path, PathBuf};

use anyhow::{ensure, Result};

/// Every file of `src` is in `dest` with the same content, and nothing else. Compared a
/// MiB at a time: reading both copies of W2 whole cost more than the transfer.
pub(crate) fn verify(src: &Path, dest: &Path) -> Result<()> {
    use std::io::Read as _;
    let (mut a, mut b) = (Vec::new(), Vec::new());
    walk(src, src, &mut a)?;
    walk(dest, dest, &mut b)?;
    a.sort();
    b.sort();
    ensure!(a == b, "file lists differ: {} vs {}", a.len(), b.len());
    let (mut x, mut y) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    for rel in &a {
        let (mut fx, mut fy) = (
            std::fs::File::open(src.join(rel))?,
            std::fs::File::open(dest.join(rel))?,
        );
        ensure!(
            fx.metadata()?.len() == fy.metadata()?.len(),
            "{} differs in size",
            rel.display()
        );
        loop {
            let n = fx.read(&mut x)?;
            if n == 0 {
                break;
            }
            fy.read_exact(&mut y[..n])?;
            ensure!(x[..n] == y[..n], "{} differs", rel.display());
        }
    }
    Ok(())
}

/// The files below `dir`, as paths relative to `root`, into `out`.
pub(crate) fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            walk(root, &path, out)?;
        } else {
            out.push(path.strip_prefix(root)?.to_path_buf());
        }
    }
    Ok(())
}

//! `--fresh-fs`: the bench's data on a new filesystem.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{ensure, Result};

/// A fresh ext4 filesystem on a loop-mounted sparse image (needs root), unmounted on drop.
pub(crate) struct FreshFs {
    pub(crate) mnt: PathBuf,
}

impl FreshFs {
    /// Mounts a new 12 GB sparse ext4 image below `base`.
    pub(crate) fn mount(base: &Path) -> Result<Self> {
        let img = base.join("bench.img");
        let mnt = base.join("mnt");
        std::fs::create_dir_all(&mnt)?;
        let run = |cmd: &mut Command| -> Result<()> {
            let out = cmd.output()?;
            ensure!(
                out.status.success(),
                "{cmd:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            Ok(())
        };
        run(Command::new("truncate").args(["-s", "12G"]).arg(&img))?;
        run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&img))?;
        run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&img)
            .arg(&mnt))?;
        Ok(Self { mnt })
    }
}

impl Drop for FreshFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mnt).status();
    }
}

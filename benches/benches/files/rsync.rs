//! The rsync rows: `rsync -a` over `ssh`, to an `sshd` of our own on loopback.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Result};

/// A throwaway sshd on a loopback port, for rsync.
pub(crate) struct Sshd {
    child: Child,
    port: u16,
    key: PathBuf,
}

impl Sshd {
    /// Starts sshd with throwaway keys below `work` (installing rsync and openssh-server
    /// with apt-get when missing and running as root).
    pub(crate) fn start(work: &Path) -> Result<Self> {
        let sshd = PathBuf::from("/usr/sbin/sshd");
        if which("rsync").is_none() || !sshd.exists() {
            let root = Command::new("id")
                .arg("-u")
                .output()
                .map(|o| o.stdout == b"0\n")
                .unwrap_or(false);
            ensure!(root, "rsync or sshd missing and not root to install them");
            let ok = Command::new("apt-get")
                .args([
                    "install",
                    "-y",
                    "-qq",
                    "rsync",
                    "openssh-server",
                    "openssh-client",
                ])
                .status()?
                .success();
            ensure!(ok, "apt-get install rsync openssh-server failed");
        }
        let dir = work.join("sshd");
        std::fs::create_dir_all(&dir)?;
        let host_key = dir.join("host_key");
        let key = dir.join("client_key");
        for k in [&host_key, &key] {
            let ok = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(k)
                .status()?
                .success();
            ensure!(ok, "ssh-keygen failed");
        }
        let auth = dir.join("authorized_keys");
        std::fs::copy(key.with_extension("pub"), &auth)?;
        std::fs::create_dir_all("/run/sshd").ok();
        let port = free_port()?;
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\nPasswordAuthentication no\n\
                 PermitRootLogin yes\nStrictModes no\nUsePAM no\nPidFile {}/sshd.pid\n",
                host_key.display(),
                auth.display(),
                dir.display()
            ),
        )?;
        let child = Command::new(&sshd)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&config)
            .stderr(Stdio::null())
            .spawn()?;
        let me = Self { child, port, key };
        // Wait (bounded) until sshd answers.
        for _ in 0..50 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(me);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("sshd did not start on port {port}")
    }

    /// Copies `src` into `dest` with `rsync -a` over ssh; returns seconds.
    pub(crate) fn rsync(&self, src: &Path, dest: &Path) -> Result<f64> {
        let ssh = format!(
            "ssh -p {} -i {} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR",
            self.port,
            self.key.display()
        );
        let start = Instant::now();
        let status = Command::new("rsync")
            .arg("-a")
            .arg("-e")
            .arg(ssh)
            .arg(format!("root@127.0.0.1:{}/", src.display()))
            .arg(format!("{}/", dest.display()))
            .status()?;
        ensure!(status.success(), "rsync failed");
        Ok(start.elapsed().as_secs_f64())
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn which(cmd: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(cmd))
        .find(|p| p.exists())
}

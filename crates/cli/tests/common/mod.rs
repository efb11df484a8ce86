//! Helpers shared by the binary's test files: a gateway child process and its memory.

#![allow(dead_code)] // each test file uses its own share of these

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

/// The `quicswarm` binary under test.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_quicswarm");

/// A gateway child process, killed on drop.
pub(crate) struct GatewayProcess {
    child: Option<Child>,
    /// Where it listens.
    pub(crate) addr: String,
    /// Its certificate's fingerprint.
    pub(crate) fingerprint: String,
    /// Its metrics endpoint (`HOST:PORT`), when started with `--metrics`.
    pub(crate) metrics: Option<String>,
    /// Its stderr lines after the start banner.
    lines: mpsc::Receiver<String>,
}

impl GatewayProcess {
    /// Starts `quicswarm gateway` with the demo subroutines on `127.0.0.1:0`, a pool of 2
    /// (unless `extra` says otherwise) and `extra` flags.
    pub(crate) fn start(cert_dir: &Path, extra: &[&str]) -> Self {
        let mut child = Command::new(BIN)
            .args([
                "gateway",
                "--listen",
                "127.0.0.1:0",
                "--pool",
                "2",
                "--demo",
                "--cert-dir",
            ])
            .arg(cert_dir)
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start gateway");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        // Keep draining stderr so the gateway never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let (mut addr, mut fingerprint, mut metrics) = (None, None, None);
        while addr.is_none() || fingerprint.is_none() {
            let line = rx
                .recv_timeout(Duration::from_secs(30))
                .expect("gateway printed its address");
            if let Some(rest) = line.strip_prefix("quicswarm gateway on ") {
                addr = rest.split_whitespace().next().map(str::to_string);
            }
            if let Some(rest) = line.strip_prefix("metrics on http://") {
                metrics = rest.strip_suffix("/metrics").map(str::to_string);
            }
            if let Some(rest) = line.strip_prefix("certificate fingerprint ") {
                fingerprint = Some(rest.trim().to_string());
            }
        }
        Self {
            child: Some(child),
            addr: addr.unwrap_or_default(),
            fingerprint: fingerprint.unwrap_or_default(),
            metrics,
            lines: rx,
        }
    }

    /// Waits (bounded) for a stderr line starting with `prefix`; returns it.
    pub(crate) fn line_starting(&self, prefix: &str) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("the gateway printed no line starting {prefix:?}"));
            if line.starts_with(prefix) {
                return line;
            }
        }
    }

    /// Sends SIGHUP (reload).
    pub(crate) fn hangup(&self) {
        let pid = self.pid().expect("running").to_string();
        let status = Command::new("kill").args(["-HUP", &pid]).status();
        assert!(status.is_ok_and(|s| s.success()), "kill -HUP {pid}");
    }

    /// The process id, while it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Waits (bounded) for the process to exit by itself.
    pub(crate) fn wait_exit(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        matches!(rx.recv_timeout(Duration::from_secs(20)), Ok(Ok(_)))
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `VmHWM` (peak resident memory) or `VmRSS` of process `pid`, in bytes.
pub(crate) fn memory(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Resets `VmHWM` of process `pid` to its current RSS (Linux: `clear_refs` 5).
pub(crate) fn reset_peak(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

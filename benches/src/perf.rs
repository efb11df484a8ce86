//! `--perf-ctl CTL[,ACK]`: profile only what a bench measures. Run the bench under
//! `perf record -D -1 --control=fifo:CTL,ACK` (perf starts disabled); the bench enables perf
//! for each measured row and disables it after, so setup, data generation and checks stay out
//! of the profile.
//!
//! ```text
//! mkfifo /tmp/ctl /tmp/ack
//! perf record -a -F 1999 -D -1 --control=fifo:/tmp/ctl,/tmp/ack -- \
//!     <bench binary> --only W2 --no-refs --swarms 1k,1k --perf-ctl /tmp/ctl,/tmp/ack
//! ```

use std::{
    fs::{File, OpenOptions},
    io::{Read, Write},
    sync::Mutex,
};

use anyhow::{Context, Result};

/// The FIFOs of a `perf record --control` session.
#[derive(Debug)]
pub struct Control {
    files: Mutex<(File, Option<File>)>,
}

impl Control {
    /// Reads `--perf-ctl CTL[,ACK]` from the command line and opens the FIFOs (perf holds
    /// them open already, so neither open waits): `None` when absent.
    pub fn from_args(args: &[String]) -> Result<Option<Self>> {
        let Some(i) = args.iter().position(|a| a == "--perf-ctl") else {
            return Ok(None);
        };
        let spec = args.get(i + 1).context("--perf-ctl needs CTL[,ACK]")?;
        let (ctl, ack) = match spec.split_once(',') {
            Some((ctl, ack)) => (ctl, Some(ack)),
            None => (spec.as_str(), None),
        };
        let ctl = OpenOptions::new()
            .write(true)
            .open(ctl)
            .with_context(|| format!("opening perf's control FIFO {ctl}"))?;
        let ack = ack
            .map(|a| File::open(a).with_context(|| format!("opening perf's ack FIFO {a}")))
            .transpose()?;
        Ok(Some(Self {
            files: Mutex::new((ctl, ack)),
        }))
    }

    /// Starts sampling; returns once perf has acknowledged (when it was given an ACK FIFO).
    pub fn enable(&self) -> Result<()> {
        self.send("enable")
    }

    /// Stops sampling.
    pub fn disable(&self) -> Result<()> {
        self.send("disable")
    }

    fn send(&self, command: &str) -> Result<()> {
        let mut files = self
            .files
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (ctl, ack) = &mut *files;
        ctl.write_all(format!("{command}\n").as_bytes())
            .with_context(|| format!("telling perf to {command}"))?;
        if let Some(ack) = ack {
            // perf answers "ack\n\0".
            let mut answer = [0u8; 5];
            ack.read_exact(&mut answer)
                .with_context(|| format!("waiting for perf to {command}"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plays perf's side of the FIFOs: reads each command and acknowledges it.
    #[test]
    fn commands_reach_perf_and_wait_for_its_ack() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let (ctl, ack) = (dir.path().join("ctl"), dir.path().join("ack"));
        for fifo in [&ctl, &ack] {
            rustix::fs::mkfifoat(
                rustix::fs::CWD,
                fifo,
                rustix::fs::Mode::from_raw_mode(0o600),
            )?;
        }
        let (ctl2, ack2) = (ctl.clone(), ack.clone());
        // Opened in the order the bench opens them, so neither open waits for ever.
        let perf = std::thread::spawn(move || -> Result<String> {
            let mut commands = File::open(&ctl2)?;
            let mut acks = OpenOptions::new().write(true).open(&ack2)?;
            let mut seen = String::new();
            let mut buf = [0u8; 64];
            while seen.matches('\n').count() < 2 {
                let n = commands.read(&mut buf)?;
                anyhow::ensure!(n > 0, "the bench closed the control FIFO early");
                seen.push_str(std::str::from_utf8(&buf[..n])?);
                for _ in 0..buf[..n].iter().filter(|&&b| b == b'\n').count() {
                    acks.write_all(b"ack\n\0")?;
                }
            }
            Ok(seen)
        });
        let args: Vec<String> = [
            "bench",
            "--perf-ctl",
            &format!("{},{}", ctl.display(), ack.display()),
        ]
        .map(String::from)
        .to_vec();
        let control = Control::from_args(&args)?.context("--perf-ctl was given")?;
        control.enable()?;
        control.disable()?;
        let seen = perf
            .join()
            .map_err(|_| anyhow::anyhow!("perf thread panicked"))??;
        assert_eq!(seen, "enable\ndisable\n");
        Ok(())
    }

    #[test]
    fn absent_without_the_flag() -> Result<()> {
        assert!(Control::from_args(&["bench".to_string()])?.is_none());
        Ok(())
    }
}

//! `--cores 1`: a Raspberry-Pi-sized budget. The robot runs the gateway on a small board, so
//! the benches can give each side (gateway, client) one core of its own and report what each
//! side's threads spent, from their names.
//!
//! Threads inherit their creator's CPU mask, so pinning a runtime's threads as they start
//! (`on_thread_start`) pins everything the side runs, the blocking pool included.

use std::{path::Path, time::Duration};

use anyhow::{ensure, Context, Result};

/// The thread-name prefix of the gateway side's threads.
pub const GATEWAY: &str = "qs-gateway";
/// The thread-name prefix of the client side's threads.
pub const CLIENT: &str = "qs-client";

/// Reads `--cores N` from the command line: `None` when absent (no pinning). Only 1 is
/// supported: one core per side, which needs a machine with two.
pub fn from_args(args: &[String]) -> Result<Option<usize>> {
    let Some(i) = args.iter().position(|a| a == "--cores") else {
        return Ok(None);
    };
    let n: usize = args
        .get(i + 1)
        .context("--cores needs a number")?
        .parse()
        .context("--cores needs a number")?;
    ensure!(
        n == 1,
        "--cores {n}: only --cores 1 (one core per side) is supported"
    );
    let have = std::thread::available_parallelism().map_or(1, |n| n.get());
    ensure!(
        have >= 2,
        "--cores 1 puts the two sides on two cores; this machine has {have}"
    );
    Ok(Some(n))
}

/// The core a side is pinned to: the gateway on the first, the client on the second.
pub fn core_of(side: &str) -> usize {
    usize::from(side != GATEWAY)
}

/// Pins the calling thread (and the threads it starts later) to `core`.
pub fn pin_current(core: usize) -> std::io::Result<()> {
    let mut set = rustix::thread::CpuSet::new();
    set.set(core);
    rustix::thread::sched_setaffinity(None, &set).map_err(std::io::Error::from)
}

/// A multi-threaded runtime for one side: its threads named `side`, pinned to that side's
/// core when `pinned`, and kept alive for the whole run so their CPU time can still be read
/// at the end of a row.
pub fn runtime(
    side: &'static str,
    workers: usize,
    pinned: bool,
) -> Result<tokio::runtime::Runtime> {
    let core = core_of(side);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder
        .worker_threads(workers)
        .thread_name(side)
        .thread_keep_alive(Duration::from_secs(3600))
        .enable_all();
    if pinned {
        builder.on_thread_start(move || {
            if let Err(e) = pin_current(core) {
                eprintln!("could not pin a {side} thread to core {core}: {e}");
            }
        });
    }
    Ok(builder.build()?)
}

/// The unit of `/proc`'s CPU times: USER_HZ, which Linux fixes at 100 for userspace. Read
/// from `/proc` rather than with `clock_gettime`, whose vDSO lookup in rustix crashes under
/// valgrind: the benches must run under callgrind. Resolution: 10 ms.
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU seconds (user and system) of this whole process, threads that exited included.
pub fn process_cpu() -> Result<f64> {
    stat_cpu(Path::new("/proc/self/stat"))
}

/// CPU seconds (user and system) of the calling thread.
pub fn this_thread_cpu() -> Result<f64> {
    stat_cpu(Path::new("/proc/thread-self/stat"))
}

fn stat_cpu(path: &Path) -> Result<f64> {
    let stat =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let ticks = utime_stime(&stat).with_context(|| format!("bad {}", path.display()))?;
    Ok(ticks as f64 / TICKS_PER_SECOND)
}

/// CPU seconds (user and system) spent so far by this process's threads whose name starts
/// with `prefix` (threads that have exited are not counted).
pub fn thread_cpu(prefix: &str) -> Result<f64> {
    let mut total = 0.0;
    for task in std::fs::read_dir("/proc/self/task")? {
        let dir = task?.path();
        let Ok(name) = std::fs::read_to_string(dir.join("comm")) else {
            continue; // exited meanwhile
        };
        if !name.trim_end().starts_with(prefix) {
            continue;
        }
        // A thread that exited since the listing is not counted.
        total += stat_cpu(&dir.join("stat")).unwrap_or(0.0);
    }
    Ok(total)
}

/// utime + stime (fields 14 and 15) of a `/proc/.../stat` line. The name (field 2) is in
/// parentheses and may hold spaces, so fields are counted after its closing one.
fn utime_stime(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11); // field 3 is the first after ')'
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// What a row cost in CPU time.
pub struct Cpu {
    /// All of this process's threads.
    pub process: f64,
    /// With a runtime per side: the gateway's threads and the client's.
    pub sides: Option<(f64, f64)>,
}

/// Where the gateway and the client run: one shared runtime on two workers, or (`--cores 1`)
/// a runtime each, pinned to a core each.
pub struct Sides {
    /// The client's runtime (and, unpinned, the gateway's too).
    pub client: tokio::runtime::Runtime,
    gateway: Option<tokio::runtime::Runtime>,
    /// With `--perf-ctl`: perf samples only inside [`with_cpu`](Self::with_cpu).
    perf: Option<crate::perf::Control>,
}

impl Sides {
    /// One shared runtime, or with `pinned` one per side on a core each (this thread goes on
    /// the client's core).
    pub fn new(pinned: bool) -> Result<Self> {
        if pinned {
            // The local copy runs on this thread's scoped threads: the client's core.
            pin_current(core_of(CLIENT))?;
            Ok(Self {
                client: runtime(CLIENT, 1, true)?,
                gateway: Some(runtime(GATEWAY, 1, true)?),
                perf: None,
            })
        } else {
            Ok(Self {
                client: runtime(CLIENT, 2, false)?,
                gateway: None,
                perf: None,
            })
        }
    }

    /// Profiles only the measured runs: perf is enabled for each [`with_cpu`](Self::with_cpu).
    #[must_use]
    pub fn profiled(self, perf: Option<crate::perf::Control>) -> Self {
        Self { perf, ..self }
    }

    /// Where to start the gateway.
    pub fn gateway_handle(&self) -> tokio::runtime::Handle {
        self.gateway
            .as_ref()
            .unwrap_or(&self.client)
            .handle()
            .clone()
    }

    /// Runs `f`, returning its result and the CPU time spent meanwhile: by this process, and
    /// with a runtime per side, by each side's threads (this one counts as the client's).
    /// Under `--perf-ctl`, perf samples while `f` runs.
    pub fn with_cpu<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<(T, Cpu)> {
        let sides = || -> Result<Option<(f64, f64)>> {
            if self.gateway.is_none() {
                return Ok(None);
            }
            // `block_on` runs the row's own future on this thread: the client's too.
            Ok(Some((
                thread_cpu(GATEWAY)?,
                thread_cpu(CLIENT)? + this_thread_cpu()?,
            )))
        };
        if let Some(perf) = &self.perf {
            perf.enable()?;
        }
        let (p0, s0) = (process_cpu()?, sides()?);
        let value = f();
        let (p1, s1) = (process_cpu()?, sides()?);
        if let Some(perf) = &self.perf {
            perf.disable()?;
        }
        let value = value?;
        let sides = s0.zip(s1).map(|(a, b)| (b.0 - a.0, b.1 - a.1));
        Ok((
            value,
            Cpu {
                process: p1 - p0,
                sides,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_read_after_the_name() {
        let line = "42 (qs gateway) S 1 2 3 4 5 6 7 8 9 10 250 17 0 0 20";
        assert_eq!(utime_stime(line), Some(267));
    }

    #[test]
    fn a_named_thread_that_spins_is_counted() {
        let (spun_tx, spun) = std::sync::mpsc::channel();
        let (read_tx, read) = std::sync::mpsc::channel::<()>();
        let spin = std::thread::Builder::new()
            .name("qs-probe".into())
            .spawn(move || {
                // Until this thread has had 0.3 s of CPU (bounded in wall time: the machine
                // is shared).
                let own = || this_thread_cpu().unwrap_or(0.0);
                let wall = std::time::Instant::now();
                let mut x = 0u64;
                while own() < 0.3 && wall.elapsed() < Duration::from_secs(30) {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
                let _ = spun_tx.send(());
                // Stays alive until its time has been read: exited threads are not counted.
                let _ = read.recv();
            })
            .unwrap();
        spun.recv().unwrap();
        let cpu = thread_cpu("qs-probe").unwrap();
        drop(read_tx);
        spin.join().unwrap();
        assert!(
            cpu >= 0.2,
            "a thread that spun 0.3 CPU-seconds counted {cpu} s"
        );
        assert_eq!(thread_cpu("no-such-thread").unwrap(), 0.0);
    }
}

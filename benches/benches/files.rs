//! File transfer benchmark: quicswarm swarms of 1, 2 and 4 connections against rsync over ssh,
//! on loopback, in one run, each result checked by comparing content.
//!
//! ```text
//! cargo bench -p quicswarm-benches --bench files               # W1, W2, W3
//! cargo bench -p quicswarm-benches --bench files -- --quick    # smaller data, a smoke run
//! cargo bench -p quicswarm-benches --bench files -- --only W1 --json files.json
//! cargo bench -p quicswarm-benches --bench files -- --fresh-fs   # on a new loop-mounted ext4
//! cargo bench -p quicswarm-benches --bench files -- --range-mib 16 --streams 8  # other tuning
//! cargo bench -p quicswarm-benches --bench files -- --cores 1  # one core per side
//! cargo bench -p quicswarm-benches --bench files -- --only W2 --swarms 2,2,2 --no-refs  # repeats
//! cargo bench -p quicswarm-benches --bench files -- --only W2 --swarms 4,4x4  # 4 in flight each
//! cargo bench -p quicswarm-benches --bench files -- --only W2 --swarms 2,2k  # first, known
//! cargo bench -p quicswarm-benches --bench files -- --only W2 --rounds 5  # medians vs the stream
//! valgrind --tool=callgrind --separate-threads=yes <bench binary> --quick --only W2 --slow
//! cargo bench -p quicswarm-benches --bench files -- --only W2 --swarms none  # references only
//! perf record -a -D -1 --control=fifo:ctl,ack -- <bench binary> --only W2 --perf-ctl ctl,ack
//! ```
//!
//! `--perf-ctl CTL,ACK` samples only the measured runs under `perf record -D -1
//! --control=fifo:CTL,ACK` (make the two FIFOs with `mkfifo` first): data generation, gateway
//! setup and the checks stay out of the profile.
//!
//! `--slow` gives the downloads' gateway and controller generous timeouts, for runs under
//! valgrind (about 50 times slower than native): the default limits would end them.
//!
//! `--cores 1` runs the gateway and the client on runtimes of their own, each pinned to one
//! core (the robot's board has few), and adds what each side's threads spent per GB.
//!
//! Each quicswarm row is a first download: its gateway starts with the row, so it reads and
//! hashes a big file for the listing before it sends it. A row marked **known** (`2k` in
//! `--swarms`, one of the default rows) comes from a gateway that listed the files with their
//! hashes before the measured download, as one that has served them before has: it reads each
//! file once, to send it. (A gateway keeps a file's piece hashes for later listings only once
//! the file has not changed for two seconds, so a known row right after the data is generated
//! is a first download; in the default order it runs seconds later.) Setting up the gateway
//! and the swarm is outside every row's time and CPU.
//!
//! Reference rows show what this machine allows: a **local atomic copy** (the receiver's
//! guarantees without network, encryption or hashing: temporary names, mode and mtime, one
//! sync, renames, on two threads) and, for W2, as many bytes as a quicswarm stream, memory to
//! memory (the transport's ceiling), twice: **stream, no files** sends one 64 KiB buffer over
//! and over (its bytes never leave the CPU's cache), **stream, distinct bytes** slices of a
//! 64 MiB buffer in turn (read from memory, as a file's bytes are), **read and hash once**
//! (each file read and BLAKE3-hashed once on one thread, as a gateway lists it) and **read,
//! copy, hash, store once** (each piece read into one buffer, copied into an aligned one as a
//! receiver copies a range out of the QUIC buffers, hashed, and written with direct I/O, each
//! file synced). The **floor** lines add up the CPU a download cannot avoid: moving the bytes
//! from memory (the distinct-bytes stream: a 1 GiB file is not in the cache when quinn copies
//! it into packets) and reading, copying, hashing and storing the file once (for a first
//! download, reading and hashing it once more for the gateway's listing). At the distinct
//! stream's use of the cores, that bounds a download's rate; with `--rounds`, the summary
//! gives these bounds as rows of their own.
//!
//! Workloads (fixed seed): **W1** 10,000 files of 4 KiB; **W2** one 1 GiB file; **W3** 2,000
//! log-like files (median ~15 KB, largest ~2 MB). rsync runs as `rsync -a` over `ssh` to an
//! `sshd` started here on a loopback port with throwaway keys (rsync and openssh-server are
//! installed with apt-get when missing and running as root; the rsync rows are left out
//! otherwise). Not part of CI. Needs about 6 GB of free disk for W2's copies. Before each
//! measured run the bench calls `sync` (untimed) so no run pays for another's writeback.
//!
//! This file runs the rows; `files/report.rs` prints them (the table, W2's floors, the rounds
//! summary), `files/references.rs` measures the reference rows, `files/check.rs` compares each
//! result with its source, `files/rsync.rs` runs rsync over a throwaway sshd, and
//! `files/fresh_fs.rs` mounts `--fresh-fs`.

#[path = "files/check.rs"]
mod check;
#[path = "files/fresh_fs.rs"]
mod fresh_fs;
#[path = "files/references.rs"]
mod references;
#[path = "files/report.rs"]
mod report;
#[path = "files/rsync.rs"]
mod rsync;

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use quicswarm::{
    files::{Selector, Swarm, TransferOptions},
    Controller, ControllerConfig, Gateway, Identity, Limits, TransportTuning, Trust,
};
use quicswarm_benches::cores::{self, Sides};
use rand::{rngs::StdRng, Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal};

use self::{
    check::verify,
    fresh_fs::FreshFs,
    references::{file_work, local_copy, memory_stream, STREAM_ITEM},
    report::{Row, HASH_ONCE, LOCAL, MEMORY, MEMORY_COLD, STORE_ONCE},
    rsync::Sshd,
};

struct Workload {
    name: &'static str,
    what: &'static str,
}

impl Workload {
    /// Its name and what it holds, as its rows carry them.
    fn id(&self) -> (&'static str, &'static str) {
        (self.name, self.what)
    }
}

const WORKLOADS: [Workload; 3] = [
    Workload {
        name: "W1",
        what: "10,000 x 4 KiB",
    },
    Workload {
        name: "W2",
        what: "1 x 1 GiB",
    },
    Workload {
        name: "W3",
        what: "2,000 log-like",
    },
];

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let json_path = args
        .iter()
        .position(|a| a == "--json")
        .and_then(|i| args.get(i + 1))
        .cloned();
    // Transfer tuning, to try other values than the defaults.
    let number = |flag: &str| -> Option<u64> {
        let i = args.iter().position(|a| a == flag)?;
        args.get(i + 1)?.parse().ok()
    };
    let mut options = TransferOptions::default();
    if let Some(mib) = number("--range-mib") {
        options.range_size = mib << 20;
    }
    if let Some(n) = number("--streams") {
        options.streams_per_client = n as usize;
    }
    // `--swarms 2,2,2`: these swarm sizes, in this order (a size may repeat, for profiling);
    // `4x1` is a swarm of 4 with 1 request in flight per connection (default: the library's);
    // `2k` a swarm of 2 from a gateway that has hashed the files before.
    let swarms: Vec<(usize, Option<usize>, bool)> = match args.iter().position(|a| a == "--swarms")
    {
        // `none`: the reference rows alone (to profile them).
        Some(i) => match args
            .get(i + 1)
            .context("--swarms needs a list such as 1,2,4")?
            .as_str()
        {
            "none" => Vec::new(),
            list => list.split(',').map(parse_swarm).collect::<Result<_>>()?,
        },
        None => vec![
            (1, None, false),
            (2, None, false),
            (4, None, false),
            (2, None, true),
        ],
    };
    let refs = !args.iter().any(|a| a == "--no-refs");
    // `--rounds N`: the quicswarm rows and W2's stream row N times, alternating, then each
    // row's median against the stream's of the same round.
    let rounds = number("--rounds").unwrap_or(1).max(1);
    let base = tempfile::tempdir()?;
    let fresh = if args.iter().any(|a| a == "--fresh-fs") {
        FreshFs::mount(base.path())
    } else {
        Err(anyhow::anyhow!("not asked for"))
    };
    let fresh = fresh
        .map_err(|e| {
            eprintln!(
                "no fresh filesystem ({e:#}); using {}",
                base.path().display()
            )
        })
        .ok();
    let work_dir = fresh
        .as_ref()
        .map_or_else(|| base.path().to_path_buf(), |f| f.mnt.clone());
    let work = work_dir.as_path();
    let rsync = if refs {
        Sshd::start(work)
            .map_err(|e| eprintln!("rsync rows left out: {e:#}"))
            .ok()
    } else {
        None
    };

    let pinned = cores::from_args(&args)?.is_some();
    let slow = args.iter().any(|a| a == "--slow");
    // Counted before pinning narrows this thread's view; pinned, the sides have one each.
    let cpus = if pinned {
        2
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } as f64;
    let sides = Sides::new(pinned)?.profiled(quicswarm_benches::perf::Control::from_args(&args)?);
    let rt = &sides.client;
    let gw = sides.gateway_handle();
    let mut rows = Vec::new();
    // What the two stream rows send, made before anything is measured.
    let hot = bytes::Bytes::from(vec![7u8; STREAM_ITEM]);
    let cold: bytes::Bytes = {
        let mut data = vec![0u8; 64 << 20];
        StdRng::seed_from_u64(7).fill(&mut data[..]);
        data.into()
    };
    for w in WORKLOADS
        .iter()
        .filter(|w| only.as_deref().is_none_or(|o| o == w.name))
    {
        let src = work.join(w.name);
        let started = Instant::now();
        let (files, bytes) = generate(w.name, &src, quick)?;
        eprintln!(
            "{}: generated {files} files, {bytes} bytes in {:.1} s",
            w.name,
            started.elapsed().as_secs_f64()
        );
        for round in 0..rounds {
            for (run, &(swarm, streams, known)) in swarms.iter().enumerate() {
                let dest = work.join(format!("dest-{}-{round}-{run}-{swarm}", w.name));
                let mut options = options.clone();
                if let Some(n) = streams {
                    options.streams_per_client = n;
                }
                let served = rt.block_on(Served::start(&src, swarm, &gw, slow, known))?;
                settle();
                let (secs, cpu) =
                    sides.with_cpu(|| rt.block_on(served.download(&dest, &options)))?;
                rt.block_on(served.stop(&gw))?;
                verify(&src, &dest)?;
                if w.name == "W2" {
                    // One file: removing it costs the next run nothing, and bounds the disk used.
                    std::fs::remove_dir_all(&dest)?;
                }
                let mut tool = match streams {
                    Some(n) => format!("quicswarm, swarm {swarm}x{n}"),
                    None => format!("quicswarm, swarm {swarm}"),
                };
                if known {
                    tool += ", known";
                }
                rows.push(Row::new(w.id(), tool, (files, bytes), secs).cpu(cpu));
            }
            // The transport's ceiling in every round, so each round has its own reference.
            if refs && w.name == "W2" {
                for (tool, ring) in [(MEMORY, &hot), (MEMORY_COLD, &cold)] {
                    settle();
                    let (secs, cpu) =
                        sides.with_cpu(|| rt.block_on(memory_stream(bytes, ring.clone(), &gw)))?;
                    rows.push(Row::new(w.id(), tool.into(), (0, bytes), secs).cpu(cpu));
                }
            }
        }
        if !refs {
            continue;
        }
        // References, not competitors: what the disk and the transport allow on this machine.
        let dest = work.join(format!("dest-{}-local", w.name));
        settle();
        let (secs, cpu) = sides.with_cpu(|| local_copy(&src, &dest))?;
        verify(&src, &dest)?;
        rows.push(Row::new(w.id(), LOCAL.into(), (files, bytes), secs).cpu(cpu));
        if w.name == "W2" {
            settle();
            let (secs, cpu) = sides.with_cpu(|| file_work(&src, None))?;
            rows.push(Row::new(w.id(), HASH_ONCE.into(), (files, bytes), secs).cpu(cpu));
            let dest = work.join(format!("dest-{}-stored", w.name));
            settle();
            let (secs, cpu) = sides.with_cpu(|| file_work(&src, Some(&dest)))?;
            verify(&src, &dest)?;
            std::fs::remove_dir_all(&dest)?;
            rows.push(Row::new(w.id(), STORE_ONCE.into(), (files, bytes), secs).cpu(cpu));
        }
        if let Some(sshd) = &rsync {
            let dest = work.join(format!("dest-{}-rsync", w.name));
            settle();
            let secs = sshd.rsync(&src, &dest)?;
            verify(&src, &dest)?;
            rows.push(Row::new(
                w.id(),
                "rsync over ssh".into(),
                (files, bytes),
                secs,
            ));
        }
    }
    // Nothing is deleted before the end: on ext4, creating files right after deleting
    // thousands is much slower (the inode allocator skips recently deleted inodes), which
    // would penalise whichever run came next. `--fresh-fs` runs on a new loop-mounted ext4
    // image instead (no deletions at all; slower writes through the loop device).
    drop(rsync);
    drop(fresh);
    report::print(
        &rows,
        rounds,
        cpus,
        pinned,
        json_path.as_deref().map(Path::new),
    )
}

/// `4` (a swarm of 4) or `4x1` (with 1 request in flight per connection), either followed by
/// `k` (`4k`): from a gateway that has hashed the files before (see [`Served::start`]).
fn parse_swarm(s: &str) -> Result<(usize, Option<usize>, bool)> {
    let bad = || format!("--swarms: {s:?} is not N or NxSTREAMS, with or without a k after");
    let (spec, known) = match s.strip_suffix('k') {
        Some(spec) => (spec, true),
        None => (s, false),
    };
    match spec.split_once('x') {
        Some((n, streams)) => Ok((
            n.parse().with_context(bad)?,
            Some(streams.parse().with_context(bad)?),
            known,
        )),
        None => Ok((spec.parse().with_context(bad)?, None, known)),
    }
}

/// Writes dirty pages back before a measured run (untimed), so no run pays for the previous
/// one's writeback: quicswarm syncs what it stores, rsync does not.
fn settle() {
    let _ = Command::new("sync").status();
}

/// Writes a workload's files below `dir`; returns (files, bytes).
fn generate(name: &str, dir: &Path, quick: bool) -> Result<(u64, u64)> {
    let mut rng = StdRng::seed_from_u64(0x5eed_0000 + u64::from(name.as_bytes()[1]));
    let mut files = 0u64;
    let mut bytes = 0u64;
    let mut write = |rel: String, data: &[u8]| -> Result<()> {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().context("parent")?)?;
        std::fs::write(path, data)?;
        files += 1;
        bytes += data.len() as u64;
        Ok(())
    };
    match name {
        "W1" => {
            let n = if quick { 1_000 } else { 10_000 };
            for i in 0..n {
                let mut data = vec![0u8; 4096];
                rng.fill(&mut data[..]);
                write(format!("d{:03}/f{i:05}.bin", i % 100), &data)?;
            }
        }
        "W2" => {
            let size = if quick { 128 << 20 } else { 1 << 30 };
            let mut data = vec![0u8; size];
            rng.fill(&mut data[..]);
            write("big.bin".into(), &data)?;
        }
        _ => {
            let n = if quick { 200 } else { 2_000 };
            // Median e^mu = 15 KB; sigma 1 gives a long tail, capped at 2 MB.
            let sizes = LogNormal::new(15_000f64.ln(), 1.0)?;
            let words = [
                "INFO", "WARN", "DEBUG", "lidar", "imu", "odom", "frame", "dropped", "latency",
                "ms", "ok",
            ];
            for i in 0..n {
                let target = if i == 0 {
                    2_000_000
                } else {
                    (sizes.sample(&mut rng) as usize).clamp(200, 2_000_000)
                };
                let mut text = String::with_capacity(target + 100);
                let mut t = 1_700_000_000.0 + f64::from(i);
                while text.len() < target {
                    t += rng.gen_range(0.0..0.05);
                    let w1 = words[rng.gen_range(0..words.len())];
                    let w2 = words[rng.gen_range(0..words.len())];
                    text.push_str(&format!(
                        "{t:.3} [node_{}] {w1} {w2} value={}\n",
                        i % 17,
                        rng.gen_range(0..100_000)
                    ));
                }
                write(
                    format!("logs/day{}/node{:04}.log", i % 7, i),
                    text.as_bytes(),
                )?;
            }
        }
    }
    Ok((files, bytes))
}

/// A gateway serving a workload as the root `data`, and a swarm connected to it: set up
/// before a measured download and shut down after it, neither part of its time or CPU.
struct Served {
    gateway: Gateway,
    swarm: Swarm,
}

impl Served {
    /// Starts a gateway on `gw` serving `src`, and connects a swarm of `n` to it. With `known`,
    /// the gateway lists the files with their hashes first, as a gateway that served them
    /// before has: a download then reads each big file once, to send it.
    async fn start(
        src: &Path,
        n: usize,
        gw: &tokio::runtime::Handle,
        slow: bool,
        known: bool,
    ) -> Result<Self> {
        let identity = Identity::self_signed(&[])?;
        let fp = identity.fingerprint();
        let (mut limits, mut transport) = (Limits::default(), TransportTuning::default());
        let mut config = ControllerConfig::with_trust(Trust::Fingerprints(vec![fp]));
        if slow {
            let long = Duration::from_secs(3600);
            limits.request_header_timeout = long;
            limits.stall_timeout = Some(long);
            transport.idle_timeout = long;
            config.call_timeout = None;
            config.transport = transport.clone();
        }
        let served = src.to_path_buf();
        let listen: std::net::SocketAddr = "127.0.0.1:0".parse()?;
        // Started on the gateway's runtime, so everything it spawns runs there.
        let gateway = gw
            .spawn(async move {
                Gateway::builder()
                    .listen(listen)
                    .identity(identity)
                    .serve("data", served)
                    .pool_size(8)
                    .limits(limits)
                    .transport(transport)
                    .spawn()
                    .await
            })
            .await??;
        let controller = Controller::new(config)?;
        let swarm = Swarm::connect(&controller, &gateway.local_addr().to_string(), n).await?;
        if known {
            let client = swarm.clients().first().context("an empty swarm")?;
            client.list_with("data", &Selector::all(), true).await?;
        }
        Ok(Self { gateway, swarm })
    }

    /// Downloads everything served into `dest`; returns seconds.
    async fn download(&self, dest: &Path, options: &TransferOptions) -> Result<f64> {
        let summary = self
            .swarm
            .download("data", &Selector::all(), dest, options)
            .await?;
        Ok(summary.seconds)
    }

    async fn stop(self, gw: &tokio::runtime::Handle) -> Result<()> {
        self.swarm.close().await;
        let gateway = self.gateway;
        gw.spawn(async move { gateway.shutdown(Duration::from_secs(1)).await })
            .await?;
        Ok(())
    }
}

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

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use quicswarm::{
    files::{Selector, Swarm, TransferOptions},
    Controller, ControllerConfig, Gateway, Identity, Limits, TransportTuning, Trust,
};
use quicswarm_benches::cores::{self, Cpu, Sides};
use rand::{rngs::StdRng, Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal};

struct Workload {
    name: &'static str,
    what: &'static str,
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
                rows.push(Row::new(w, tool, (files, bytes), secs).cpu(cpu));
            }
            // The transport's ceiling in every round, so each round has its own reference.
            if refs && w.name == "W2" {
                for (tool, ring) in [(MEMORY, &hot), (MEMORY_COLD, &cold)] {
                    settle();
                    let (secs, cpu) =
                        sides.with_cpu(|| rt.block_on(memory_stream(bytes, ring.clone(), &gw)))?;
                    rows.push(Row::new(w, tool.into(), (0, bytes), secs).cpu(cpu));
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
        rows.push(Row::new(w, LOCAL.into(), (files, bytes), secs).cpu(cpu));
        if w.name == "W2" {
            settle();
            let (secs, cpu) = sides.with_cpu(|| file_work(&src, None))?;
            rows.push(Row::new(w, HASH_ONCE.into(), (files, bytes), secs).cpu(cpu));
            let dest = work.join(format!("dest-{}-stored", w.name));
            settle();
            let (secs, cpu) = sides.with_cpu(|| file_work(&src, Some(&dest)))?;
            verify(&src, &dest)?;
            std::fs::remove_dir_all(&dest)?;
            rows.push(Row::new(w, STORE_ONCE.into(), (files, bytes), secs).cpu(cpu));
        }
        if let Some(sshd) = &rsync {
            let dest = work.join(format!("dest-{}-rsync", w.name));
            settle();
            let secs = sshd.rsync(&src, &dest)?;
            verify(&src, &dest)?;
            rows.push(Row::new(w, "rsync over ssh".into(), (files, bytes), secs));
        }
    }
    // Nothing is deleted before the end: on ext4, creating files right after deleting
    // thousands is much slower (the inode allocator skips recently deleted inodes), which
    // would penalise whichever run came next. `--fresh-fs` runs on a new loop-mounted ext4
    // image instead (no deletions at all; slower writes through the loop device).
    drop(rsync);
    drop(fresh);

    println!();
    println!(
        "{:<4} {:<16} {:<20} {:>8} {:>7} {:>10} {:>8} {:>9} {:>13}",
        "", "workload", "tool", "seconds", "CPU s", "files/s", "MB/s", "vs rsync", "vs local copy"
    );
    let find = |r: &Row, tool: &str| {
        rows.iter()
            .find(|b| b.workload == r.workload && b.tool.starts_with(tool))
    };
    let versus = |r: &Row, tool: &str| {
        find(r, tool).map_or("-".to_string(), |b| format!("{:.2}x", b.secs / r.secs))
    };
    for r in &rows {
        println!(
            "{:<4} {:<16} {:<20} {:>8.2} {:>7} {:>10.0} {:>8.1} {:>9} {:>13}",
            r.workload,
            r.what,
            r.tool,
            r.secs,
            r.cpu.map_or("-".to_string(), |c| format!("{c:.2}")),
            r.files as f64 / r.secs,
            r.bytes as f64 / 1e6 / r.secs,
            versus(r, "rsync"),
            versus(r, LOCAL),
        );
    }
    for (round, floor) in floors(&rows).iter().enumerate() {
        println!(
            "W2 floor, round {}: moving the bytes from memory {:.2} (the distinct-bytes stream) + reading, copying, hashing and storing {:.2} CPU-seconds per GB = {:.2}x the stream's CPU (+ reading and hashing for the listing {:.2}: {:.2}x for a first download); at the distinct stream's use of the cores, a download runs at most {:.2}x the stream's rate ({:.2}x)",
            round + 1,
            floor.moving,
            floor.work,
            floor.cpu[0],
            floor.listing,
            floor.cpu[1],
            floor.rate[0],
            floor.rate[1],
        );
    }
    if rounds > 1 {
        println!();
        print_rounds(&rows, cpus);
    }
    if pinned {
        println!();
        println!("one core per side: CPU-seconds per GB");
        println!("{:<4} {:<24} {:>9} {:>9}", "", "tool", "gateway", "client");
        // The local copy runs on threads of its own, not the sides'.
        for r in rows.iter().filter(|r| r.sides.is_some() && r.tool != LOCAL) {
            let gb = r.bytes as f64 / 1e9;
            let (g, c) = r.sides.unwrap_or_default();
            println!(
                "{:<4} {:<24} {:>9.2} {:>9.2}",
                r.workload,
                r.tool,
                g / gb,
                c / gb
            );
        }
    }
    println!("targets: W1 >= 10,000 files/s and >= 3x rsync; W2 >= 600 MB/s and >= 1.8x rsync; W3 >= 2x rsync");
    if let Some(path) = json_path {
        let json: Vec<_> = rows
            .iter()
            .map(|r| {
                serde_json::json!({"workload": r.workload, "tool": r.tool, "seconds": r.secs, "cpu_seconds": r.cpu,
                                   "gateway_cpu_seconds": r.sides.map(|s| s.0), "client_cpu_seconds": r.sides.map(|s| s.1), "files": r.files,
                                   "bytes": r.bytes, "files_per_s": r.files as f64 / r.secs,
                                   "mb_per_s": r.bytes as f64 / 1e6 / r.secs})
            })
            .collect();
        std::fs::write(&path, serde_json::to_string_pretty(&json)?)?;
    }
    Ok(())
}

/// The least a W2 download can cost in one round, from that round's streams and the run's file
/// work. A file's bytes come from memory, not the cache, when quinn copies them into packets,
/// so moving them costs what the distinct-bytes stream costs; beyond that, a download must
/// read the file (the gateway), copy it out of the transport's buffers into its own, hash it
/// and store it (the client): [`STORE_ONCE`]. A first download also reads and hashes it for
/// the listing: [`HASH_ONCE`].
struct Floor {
    /// CPU-seconds per GB: moving the bytes, the file work, the listing.
    moving: f64,
    work: f64,
    listing: f64,
    /// A known file's and a first download's: seconds at the distinct stream's use of the
    /// cores, and CPU-seconds, for all the bytes.
    secs: [f64; 2],
    cpu_secs: [f64; 2],
    /// Against the stream without files of the round: CPU and rate.
    cpu: [f64; 2],
    rate: [f64; 2],
}

/// One [`Floor`] per round that ran both streams, with the file work measured.
fn floors(rows: &[Row]) -> Vec<Floor> {
    let w2 = |tool: &'static str| {
        rows.iter()
            .filter(move |r| r.workload == "W2" && r.tool == tool)
    };
    let once = |tool: &'static str| w2(tool).next().and_then(|r| r.cpu);
    let (Some(work), Some(listing)) = (once(STORE_ONCE), once(HASH_ONCE)) else {
        return Vec::new();
    };
    w2(MEMORY)
        .zip(w2(MEMORY_COLD))
        .filter_map(|(hot, cold)| {
            let (hot_cpu, cold_cpu) = (hot.cpu?, cold.cpu?);
            let gb = hot.bytes as f64 / 1e9;
            let cpu_secs = [cold_cpu + work, cold_cpu + work + listing];
            // At the distinct stream's share of the cores, time goes with CPU time.
            let secs = cpu_secs.map(|c| c * cold.secs / cold_cpu);
            Some(Floor {
                moving: cold_cpu / gb,
                work: work / gb,
                listing: listing / gb,
                secs,
                cpu_secs,
                cpu: cpu_secs.map(|c| c / hot_cpu),
                rate: secs.map(|s| hot.secs / s),
            })
        })
        .collect()
}

/// With `--rounds`: per quicswarm tool of W2, the median over the rounds of its rate, of the
/// share of the `cores` it kept busy (its CPU time over the cores' time; the rate is this
/// share over the CPU time per byte), and of its rate and CPU time against each stream row of
/// the same round (the k-th run of a tool pairs with the k-th run of the stream).
fn print_rounds(rows: &[Row], cores: f64) {
    // Each round's floors, as rows of their own, at the distinct stream's use of the cores.
    let floors: Vec<Row> = floors(rows)
        .into_iter()
        .zip(
            rows.iter()
                .filter(|r| r.workload == "W2" && r.tool == MEMORY),
        )
        .flat_map(|(floor, stream)| {
            FLOORS.into_iter().enumerate().map(move |(i, tool)| Row {
                tool: tool.into(),
                secs: floor.secs[i],
                cpu: Some(floor.cpu_secs[i]),
                sides: None,
                ..*stream
            })
        })
        .collect();
    let runs_of = |tool: &str| -> Vec<&Row> {
        rows.iter()
            .chain(&floors)
            .filter(|r| r.workload == "W2" && r.tool == tool)
            .collect()
    };
    let references = [MEMORY, MEMORY_COLD].map(runs_of);
    let rounds = references[0].len();
    if rounds == 0 {
        return;
    }
    let median = |mut v: Vec<f64>| -> f64 {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let rate = |r: &Row| r.bytes as f64 / 1e6 / r.secs;
    println!("W2 over {rounds} rounds, medians (each run against the streams of its round):");
    println!(
        "{:<24} {:>8} {:>11} {:>22} {:>22}",
        "tool", "MB/s", "cores busy", "vs stream: rate, CPU", "vs distinct: rate, CPU"
    );
    let mut tools: Vec<&str> = rows
        .iter()
        .filter(|r| r.workload == "W2" && r.tool.starts_with("quicswarm"))
        .map(|r| r.tool.as_str())
        .collect();
    tools.sort_unstable();
    tools.dedup();
    for tool in [MEMORY, MEMORY_COLD].into_iter().chain(FLOORS).chain(tools) {
        let runs = runs_of(tool);
        let per_round = (runs.len() / rounds).max(1);
        let mut columns = String::new();
        for reference in &references {
            let (mut rates, mut cpus) = (Vec::new(), Vec::new());
            for (group, stream) in runs.chunks(per_round).zip(reference) {
                for r in group {
                    rates.push(stream.secs / r.secs);
                    if let (Some(a), Some(b)) = (r.cpu, stream.cpu) {
                        cpus.push(a / b);
                    }
                }
            }
            columns += &format!(
                " {:>22}",
                format!("{:.2}x, {:.2}x", median(rates), median(cpus))
            );
        }
        let busy = median(
            runs.iter()
                .filter_map(|r| r.cpu.map(|c| c / (cores * r.secs)))
                .collect(),
        );
        println!(
            "{:<24} {:>8.0} {:>11.2}{columns}",
            tool,
            median(runs.iter().map(|r| rate(r)).collect()),
            busy,
        );
    }
}

/// A reference row: a local copy with the receiver's guarantees (temporary names, mode and
/// mtime, one sync, renames) on two threads, without network, encryption or hashing.
const LOCAL: &str = "local atomic copy";
/// What a first download's listing adds: the files read and hashed once ([`file_work`]).
const HASH_ONCE: &str = "read and hash once";
/// The least file work of any download: read, copied, hashed and stored once ([`file_work`]).
const STORE_ONCE: &str = "read, copy, hash, store once";
/// The rounds summary's [`Floor`] rows: a known file's, a first download's.
const FLOORS: [&str; 2] = ["floor, known file", "floor, first download"];
/// The transport's ceiling for W2: as many bytes as a quicswarm stream, memory to memory, each
/// item the same 64 KiB buffer (always in the CPU's cache).
const MEMORY: &str = "stream, no files";
/// The same stream with distinct bytes: items sliced in turn from a buffer bigger than the
/// CPU's caches, so each is read from memory, as a file's bytes are.
const MEMORY_COLD: &str = "stream, distinct bytes";

struct Row {
    workload: &'static str,
    what: &'static str,
    tool: String,
    files: u64,
    bytes: u64,
    secs: f64,
    /// CPU seconds this process spent on the row (all threads); `None` for other processes.
    cpu: Option<f64>,
    /// With `--cores 1`: CPU seconds of the gateway's and the client's threads.
    sides: Option<(f64, f64)>,
}

impl Row {
    fn new(w: &Workload, tool: String, (files, bytes): (u64, u64), secs: f64) -> Self {
        Self {
            workload: w.name,
            what: w.what,
            tool,
            files,
            bytes,
            secs,
            cpu: None,
            sides: None,
        }
    }

    fn cpu(mut self, cpu: Cpu) -> Self {
        self.cpu = Some(cpu.process);
        self.sides = cpu.sides;
        self
    }
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

/// Copies `src` into `dest` as an atomic, durable receiver at least must: each file written
/// under a temporary name beside its final one, given its mode and mtime; then one `syncfs`
/// and the renames. Two threads (this machine's cores). Returns seconds.
fn local_copy(src: &Path, dest: &Path) -> Result<f64> {
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
const STREAM_ITEM: usize = 64 * 1024;

/// Streams `bytes` in 64 KiB items from a gateway to a client in this process, memory to
/// memory, as W2's transport ceiling: the items are slices of `ring`, in turn (one item's
/// worth: the same bytes every time). Returns seconds.
async fn memory_stream(bytes: u64, ring: bytes::Bytes, gw: &tokio::runtime::Handle) -> Result<f64> {
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
fn file_work(src: &Path, store_in: Option<&Path>) -> Result<f64> {
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

/// Every file of `src` is in `dest` with the same content, and nothing else. Compared a
/// MiB at a time: reading both copies of W2 whole cost more than the transfer.
fn verify(src: &Path, dest: &Path) -> Result<()> {
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

fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
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

/// A fresh ext4 filesystem on a loop-mounted sparse image (needs root), unmounted on drop.
struct FreshFs {
    mnt: PathBuf,
}

impl FreshFs {
    fn mount(base: &Path) -> Result<Self> {
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

/// A throwaway sshd on a loopback port, for rsync.
struct Sshd {
    child: Child,
    port: u16,
    key: PathBuf,
}

impl Sshd {
    fn start(work: &Path) -> Result<Self> {
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

    fn rsync(&self, src: &Path, dest: &Path) -> Result<f64> {
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

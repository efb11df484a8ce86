//! Soak: 5 clients mixing streams, calls, sends and file downloads for a long time over an
//! impaired link, checking every result, and the gateway's memory over time.
//!
//! ```text
//! cargo bench -p quicswarm-benches --bench soak             # 10 minutes
//! cargo bench -p quicswarm-benches --bench soak -- 1        # minutes
//! ```
//!
//! As root, the link is the emulator's profile L3 ("edge of range": 10 Mbit/s, RTT 60 ± 30 ms,
//! 5% bursty loss each way) between two network namespaces, and the gateway runs as its own
//! process, so its memory is measured alone. Otherwise the link approximates L3 with the
//! seeded socket wrapper of the test suite (30 ms each way, 10 Mbit/s, 2.5% loss each way, no
//! jitter or bursts) and gateway and clients share the process. Not run in CI.
//!
//! Looking into the gateway's memory (emulated run):
//!
//! ```text
//! SOAK_MALLOC=1 cargo bench ... --bench soak -- 8      # glibc's in-use and held bytes, every 30 s
//! SOAK_MALLOC_TRIM=1 SOAK_MALLOC=1 ...                 # the same after returning free pages
//! SOAK_MAX_OPS=64 ...                                  # another Limits::max_concurrent_ops
//! cargo bench -p quicswarm-benches --features dhat --bench soak -- 6
//! python3 scripts/dhat-top.py dhat-heap.json           # live bytes by call site at the peak
//! ```

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{ensure, Result};
use quicswarm::{
    demo::CounterArgs,
    files::{Selector, Swarm, TransferOptions},
    Controller, ControllerConfig, Gateway, Identity, Trust,
};
use quicswarm_tests::link::Link;

/// With `--features dhat`, the gateway process records every allocation's call stack: it
/// prints its live heap every 30 s and, at its end, writes `dhat-heap.json` (live bytes by
/// call site, at the heap's peak and at the end) for `dh_view.html` or `scripts/dhat-top.py`.
#[cfg(feature = "dhat")]
#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

#[derive(Default)]
struct Counts {
    streams: AtomicU64,
    items: AtomicU64,
    calls: AtomicU64,
    sends: AtomicU64,
    downloads: AtomicU64,
    files: AtomicU64,
}

/// Resident memory of a process, KiB: anonymous pages (heap, stacks) and file pages (the
/// binary's code and data as it is touched), which only grow as new code paths run.
#[derive(Clone, Copy, Debug, Default)]
struct Mem {
    anon: u64,
    file: u64,
}

impl Mem {
    fn rss(self) -> u64 {
        self.anon + self.file
    }
}

impl std::fmt::Display for Mem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}+{})", self.rss(), self.anon, self.file)
    }
}

fn mem_self() -> Mem {
    mem_of("self")
}

/// Resident memory of a process (`self` or a pid).
fn mem_of(pid: &str) -> Mem {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    Mem {
        anon: field("RssAnon:"),
        file: field("RssFile:") + field("RssShmem:"),
    }
}

fn l3(seed: u64) -> Link {
    let link = Link::new(seed);
    link.set_delay(Duration::from_millis(30));
    link.set_rate(Some(1_250_000), 256 * 1024);
    link.set_loss(0.025);
    link
}

/// One client's loop: every round checks each kind of operation.
async fn worker(
    id: u64,
    controller: Controller,
    addr: String,
    until: Instant,
    counts: Arc<Counts>,
    data: std::path::PathBuf,
) -> Result<()> {
    let client = controller.get_client(&addr).await?;
    let mut round = 0u64;
    while Instant::now() < until {
        round += 1;
        // Reliable stream: every item, in order, once.
        let mut s = client
            .stream(
                "counter",
                &CounterArgs {
                    count: 50,
                    size: 512,
                },
            )
            .await?;
        let mut next = 0;
        while let Some((ident, data)) = s.next().await? {
            ensure!(
                ident == next && data.len() == 512,
                "client {id}: item {ident} where {next} was due"
            );
            next += 1;
        }
        ensure!(next == 50, "client {id}: {next} of 50 items");
        counts.streams.fetch_add(1, Ordering::Relaxed);
        counts.items.fetch_add(50, Ordering::Relaxed);
        // Call.
        let text = format!("client {id} round {round}");
        ensure!(
            client.call("echo", text.as_str()).await? == text.as_bytes(),
            "echo mismatch"
        );
        counts.calls.fetch_add(1, Ordering::Relaxed);
        // Send.
        let buf = vec![(round % 200) as u8; 20_000];
        let want: i64 = buf.iter().map(|&b| i64::from(b)).sum();
        ensure!(
            client.send("byte_sum", &(), buf).await? == want,
            "byte_sum mismatch"
        );
        counts.sends.fetch_add(1, Ordering::Relaxed);
        // A file download every tenth round, checked file by file.
        if round.is_multiple_of(10) {
            let dest = tempfile::tempdir()?;
            let summary = Swarm::new(vec![client.clone()])
                .download(
                    "data",
                    &Selector::all(),
                    dest.path(),
                    &TransferOptions::default(),
                )
                .await?;
            for entry in std::fs::read_dir(&data)? {
                let p = entry?.path();
                let name = p.file_name().unwrap_or_default();
                ensure!(
                    std::fs::read(&p)? == std::fs::read(dest.path().join(name))?,
                    "{} differs",
                    p.display()
                );
            }
            counts.downloads.fetch_add(1, Ordering::Relaxed);
            counts.files.fetch_add(summary.files, Ordering::Relaxed);
        }
    }
    client.close().await?;
    Ok(())
}

/// What the five clients did, and the gateway's memory over the run.
struct Soak {
    counts: Arc<Counts>,
    failures: usize,
    minutes: f64,
    rss_start: Mem,
    rss_end: Mem,
    samples: Vec<Mem>,
    ping: Duration,
}

impl Soak {
    fn print(&self, link: &str, whose: &str) {
        let c = &self.counts;
        println!(
            "soak {:.1} min, 5 clients over {link}: {} streams ({} items, none lost or duplicated), {} calls, {} sends, {} downloads ({} files verified), {} worker failures",
            self.minutes,
            c.streams.load(Ordering::Relaxed),
            c.items.load(Ordering::Relaxed),
            c.calls.load(Ordering::Relaxed),
            c.sends.load(Ordering::Relaxed),
            c.downloads.load(Ordering::Relaxed),
            c.files.load(Ordering::Relaxed),
            self.failures
        );
        let samples: Vec<String> = self.samples.iter().map(Mem::to_string).collect();
        println!(
            "{whose} RSS (anonymous+file) KiB: {} at the start, {} at the end; every 30 s: {}",
            self.rss_start,
            self.rss_end,
            samples.join(", ")
        );
        println!("the gateway still answers: ping {:?}", self.ping);
    }
}

/// Runs five workers against `addr` for `minutes`, sampling `rss` every 30 s.
async fn soak(
    minutes: f64,
    fp: quicswarm::Fingerprint,
    addr: String,
    data: std::path::PathBuf,
    config: impl Fn(u64, &mut ControllerConfig),
    rss: impl Fn() -> Mem + Send + Clone + 'static,
) -> Result<Soak> {
    let rss_start = rss();
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(minutes * 60.0);
    let counts = Arc::new(Counts::default());
    let mut tasks = Vec::new();
    for id in 0..5u64 {
        let mut c = ControllerConfig::with_trust(Trust::Fingerprints(vec![fp]));
        c.call_timeout = Some(Duration::from_secs(60));
        config(id, &mut c);
        let controller = Controller::new(c)?;
        tasks.push(tokio::spawn(worker(
            id,
            controller,
            addr.clone(),
            until,
            counts.clone(),
            data.clone(),
        )));
    }
    let sample = rss.clone();
    let sampler = tokio::spawn(async move {
        let mut samples = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_secs(30));
        loop {
            tick.tick().await;
            samples.push(sample());
            if Instant::now() >= until {
                return samples;
            }
        }
    });
    let mut failures = 0;
    for t in tasks {
        if let Err(e) = t.await? {
            eprintln!("worker failed: {e:#}");
            failures += 1;
        }
    }
    let samples = sampler.await?;
    let rss_end = rss();
    let mut c = ControllerConfig::with_trust(Trust::Fingerprints(vec![fp]));
    config(99, &mut c);
    let ping = Controller::new(c)?.get_client(&addr).await?.ping().await?;
    Ok(Soak {
        counts,
        failures,
        minutes: start.elapsed().as_secs_f64() / 60.0,
        rss_start,
        rss_end,
        samples,
        ping,
    })
}

fn log_files(dir: &std::path::Path) -> Result<()> {
    for i in 0..20 {
        std::fs::write(
            dir.join(format!("f{i}.log")),
            format!("line {i}\n").repeat(100 + i * 50),
        )?;
    }
    Ok(())
}

fn in_process(minutes: f64) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let data = tempfile::tempdir()?;
        log_files(data.path())?;
        let identity = Identity::self_signed(&[])?;
        let fp = identity.fingerprint();
        let gw_link = l3(1);
        let gateway = Gateway::builder()
            .listen("127.0.0.1:0".parse()?)
            .identity(identity)
            .registry(quicswarm::demo::registry())
            .serve("data", data.path())
            .socket_wrapper(gw_link.wrapper())
            .spawn()
            .await?;
        let addr = gateway.local_addr().to_string();
        let links: Vec<Link> = (0..=5).map(|id| l3(100 + id)).collect();
        let wrappers: Vec<_> = links.iter().map(Link::wrapper).collect();
        let report = soak(
            minutes,
            fp,
            addr,
            data.path().to_path_buf(),
            |id, c| c.socket_wrapper = wrappers.get(id as usize).cloned(),
            mem_self,
        )
        .await?;
        let dropped: u64 = links.iter().map(|l| l.counters().1).sum::<u64>() + gw_link.counters().1;
        report.print(
            "an L3-like socket-wrapper link",
            "process (gateway and clients)",
        );
        println!("{dropped} datagrams dropped by the link");
        ensure!(report.failures == 0, "{} workers failed", report.failures);
        Ok(())
    })
}

fn main() -> Result<()> {
    if let Ok(listen) = std::env::var("SOAK_GATEWAY") {
        return gateway_child(&listen);
    }
    let minutes: f64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10.0);
    if linkem::can_run() {
        emulated(minutes)
    } else {
        eprintln!("not root: the socket-wrapper link, gateway and clients in one process");
        in_process(minutes)
    }
}

/// The gateway process of the emulated soak: serves until its stdin closes (the parent
/// ended), printing its fingerprint first.
fn gateway_child(listen: &str) -> Result<()> {
    let data = std::env::var("SOAK_DATA")?;
    #[cfg(feature = "dhat")]
    let _profiler = dhat::Profiler::builder().trim_backtraces(Some(24)).build();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let identity = Identity::self_signed(&[])?;
        let mut limits = quicswarm::Limits::default();
        // Quinn keeps a state per stream the client may open (buffers keep their capacity for
        // reuse): fewer concurrent operations, a smaller pool that fills sooner.
        if let Some(n) = std::env::var("SOAK_MAX_OPS")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            limits.max_concurrent_ops = n;
        }
        let gateway = Gateway::builder()
            .listen(listen.parse()?)
            .limits(limits)
            .identity(identity)
            .transport(quicswarm::TransportTuning::preset(
                quicswarm::LinkPreset::Wifi,
            ))
            .registry(quicswarm::demo::registry())
            .serve("data", data)
            .spawn()
            .await?;
        println!("fingerprint {}", gateway.fingerprint());
        if std::env::var_os("SOAK_MALLOC").is_some() {
            tokio::spawn(malloc_report(
                std::env::var_os("SOAK_MALLOC_TRIM").is_some(),
            ));
        }
        #[cfg(feature = "dhat")]
        tokio::spawn(async {
            let mut tick = tokio::time::interval(Duration::from_secs(30));
            loop {
                tick.tick().await;
                let h = dhat::HeapStats::get();
                eprintln!(
                    "gateway heap: {} KiB live in {} blocks",
                    h.curr_bytes / 1024,
                    h.curr_blocks
                );
            }
        });
        // Bounded by the parent: its end closes our stdin.
        tokio::task::spawn_blocking(|| {
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
        })
        .await?;
        gateway.shutdown(Duration::from_secs(1)).await;
        Ok(())
    })
}

/// With `SOAK_MALLOC=1`, the gateway process prints every 30 s what glibc's allocator holds:
/// bytes in use by the program, and bytes freed but kept (not returned to the system). With
/// `SOAK_MALLOC_TRIM=1` it also returns the free pages (`malloc_trim`) before each report, to
/// tell memory the program holds from memory the allocator keeps.
#[allow(unsafe_code)]
async fn malloc_report(trim: bool) {
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    loop {
        tick.tick().await;
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        {
            if trim {
                // SAFETY: malloc_trim has no preconditions; it only releases free memory.
                unsafe { libc::malloc_trim(0) };
            }
            // SAFETY: mallinfo2 has no preconditions and returns a plain struct.
            let m = unsafe { libc::mallinfo2() };
            eprintln!(
                "gateway malloc: {} KiB in use, {} KiB free but held, {} KiB mapped{}",
                (m.uordblks + m.hblkhd) / 1024,
                m.fordblks / 1024,
                (m.arena + m.hblkhd) / 1024,
                if trim { " (after malloc_trim)" } else { "" }
            );
        }
        #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
        let _ = trim;
    }
}

/// Gateway process in namespace A, clients in namespace B, profile L3 between them.
fn emulated(minutes: f64) -> Result<()> {
    use std::io::BufRead as _;
    linkem::teardown_on_ctrl_c()?;
    let link = linkem::Link::up(linkem::Profile::L3.spec().seed(7))?;
    let data = tempfile::tempdir()?;
    log_files(data.path())?;
    let listen = format!("{}:4433", link.addr(linkem::Side::A));
    let mut child = link
        .command(linkem::Side::A, &std::env::current_exe()?.to_string_lossy())
        .env("SOAK_GATEWAY", &listen)
        .env("SOAK_DATA", data.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let pid = child.id().to_string();
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let mut line = String::new();
    std::io::BufReader::new(stdout).read_line(&mut line)?;
    let fp: quicswarm::Fingerprint = line
        .trim()
        .strip_prefix("fingerprint ")
        .ok_or_else(|| anyhow::anyhow!("gateway said {line:?}"))?
        .parse()?;
    let ns_b = link.namespace(linkem::Side::B).to_string();
    let data_dir = data.path().to_path_buf();
    let gateway_pid = pid.clone();
    let outcome = std::thread::spawn(move || -> Result<()> {
        linkem::enter_namespace(&ns_b)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let pid = gateway_pid.clone();
            let report = soak(
                minutes,
                fp,
                listen,
                data_dir,
                |_, c| {
                    c.transport = quicswarm::TransportTuning::preset(quicswarm::LinkPreset::Wifi)
                },
                move || mem_of(&pid),
            )
            .await?;
            report.print("the emulated L3 link", "gateway process");
            ensure!(report.failures == 0, "{} workers failed", report.failures);
            Ok(())
        })
    })
    .join()
    .map_err(|_| anyhow::anyhow!("client thread panicked"))?;
    drop(child.stdin.take());
    let _ = child.wait();
    let c = link.down();
    println!(
        "link a→b: {} packets, {} lost, {} queue-dropped; b→a: {} packets, {} lost, {} queue-dropped",
        c.a_to_b.packets, c.a_to_b.lost, c.a_to_b.queue_dropped, c.b_to_a.packets, c.b_to_a.lost, c.b_to_a.queue_dropped
    );
    outcome
}

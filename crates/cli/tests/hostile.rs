//! A hostile client, speaking the wire protocol by hand, against a gateway in its own process;
//! and the mirror image, a hostile gateway against the `quicswarm get` process.
//!
//! For every class of request that could make a gateway hold or do more than its budget
//! (patterns, amplifying selections, read-ahead, declared sizes, lifecycle), each test asserts:
//! - the typed error, or the bounded result;
//! - that the gateway's peak RSS (`VmHWM`, reset before the attack) grew by less than
//!   [`MARGIN`] over its idle footprint;
//! - that a well-behaved client on another connection gets its pings answered within a
//!   second while the attack runs.
//!
//! Each prints one line (`cargo test -p quicswarm-cli --test hostile -- --nocapture`): the
//! class, the idle and peak RSS, the time to the answer and the slowest ping.

mod common;

use std::{
    future::Future,
    path::Path,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use common::{memory, reset_peak, GatewayProcess, BIN};
use quicswarm::{
    proto::{
        transfer::{ByteRange, FileEntry, FileFrame, GetItem, ListFrame, Mtime, PutItem, Selector},
        ErrorCode, Request, Response,
    },
    Client, Controller, ControllerConfig, Fingerprint, Trust,
};
use quicswarm_tests::wire::{frame, read_frame};

/// Most a gateway's peak RSS may grow during one attack.
const MARGIN: u64 = 64 << 20;
/// Slowest answer the well-behaved client may get while an attack runs.
const PING_BOUND: Duration = Duration::from_secs(1);
/// Bound of any single wait.
const WAIT: Duration = Duration::from_secs(30);
/// The sparse file served for range requests.
const BIG: u64 = 1 << 30;
const MIB: f64 = (1 << 20) as f64;

/// A gateway process serving `logs` (a few small files and a sparse 1 GiB `big.bin`) and
/// accepting uploads, with its folders.
struct Target {
    gateway: GatewayProcess,
    pid: u32,
    _dir: tempfile::TempDir,
}

impl Target {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("logs");
        std::fs::create_dir_all(logs.join("sub")).unwrap();
        for i in 0..20 {
            std::fs::write(logs.join(format!("sub/{i}.log")), vec![b'x'; 1000]).unwrap();
        }
        std::fs::File::create(logs.join("big.bin"))
            .unwrap()
            .set_len(BIG)
            .unwrap();
        // A FIFO: opening it for reading would wait for a writer forever.
        let fifo = std::process::Command::new("mkfifo")
            .arg(logs.join("sub/pipe"))
            .status()
            .unwrap();
        assert!(fifo.success());
        let uploads = dir.path().join("uploads");
        let serve = format!("logs={}", logs.display());
        let gateway = GatewayProcess::start(
            &dir.path().join("certs"),
            &["--serve", &serve, "--upload-dir", uploads.to_str().unwrap()],
        );
        let pid = gateway.pid().unwrap();
        Self {
            gateway,
            pid,
            _dir: dir,
        }
    }

    fn fingerprint(&self) -> Fingerprint {
        self.gateway.fingerprint.parse().unwrap()
    }

    async fn client(&self) -> Client {
        let mut config =
            ControllerConfig::with_trust(Trust::Fingerprints(vec![self.fingerprint()]));
        config.call_timeout = Some(WAIT);
        let controller = Controller::new(config).unwrap();
        tokio::time::timeout(WAIT, controller.get_client(&self.gateway.addr))
            .await
            .unwrap()
            .unwrap()
    }
}

/// What one attack cost.
struct Report {
    idle: u64,
    peak: u64,
    elapsed: Duration,
    slowest_ping: Duration,
}

impl Report {
    fn check(&self, what: &str) {
        println!(
            "hostile client: {what}: idle {:.1} MiB, peak {:.1} MiB (+{:.1}), answered in {:.3} s, slowest ping {:.1} ms",
            self.idle as f64 / MIB,
            self.peak as f64 / MIB,
            self.peak.saturating_sub(self.idle) as f64 / MIB,
            self.elapsed.as_secs_f64(),
            self.slowest_ping.as_secs_f64() * 1e3,
        );
        assert!(
            self.peak.saturating_sub(self.idle) < MARGIN,
            "{what}: the gateway's peak RSS grew from {} to {} bytes",
            self.idle,
            self.peak
        );
        assert!(
            self.slowest_ping < PING_BOUND,
            "{what}: a ping took {:?} during the attack",
            self.slowest_ping
        );
    }
}

/// Runs `attack` on its own connection while a second client pings the gateway every 50 ms;
/// returns the attack's outcome and what it cost the gateway.
async fn attack<T, F, Fut>(target: &Target, attack: F) -> (T, Report)
where
    F: FnOnce(quinn::Connection) -> Fut,
    Fut: Future<Output = T>,
{
    let good = target.client().await;
    let evil = target.client().await;
    good.ping().await.unwrap();
    evil.ping().await.unwrap();
    assert!(
        reset_peak(target.pid),
        "cannot reset the gateway's peak RSS"
    );
    let idle = memory(target.pid, "VmHWM").unwrap();
    let slowest = Arc::new(AtomicU64::new(0));
    let pinger = {
        let slowest = slowest.clone();
        async move {
            // Bounded by the attack's own timeout below.
            loop {
                let start = Instant::now();
                let answered = tokio::time::timeout(Duration::from_secs(5), good.ping()).await;
                let took = if matches!(answered, Ok(Ok(_))) {
                    start.elapsed()
                } else {
                    Duration::from_secs(5)
                };
                slowest.fetch_max(took.as_micros() as u64, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let conn = evil.connection().quic().unwrap().clone();
    let start = Instant::now();
    let outcome = tokio::select! {
        outcome = tokio::time::timeout(WAIT, attack(conn)) => outcome.expect("the attack got an answer in time"),
        () = pinger => unreachable!("the pinger loops until the attack ends"),
    };
    let elapsed = start.elapsed();
    let peak = memory(target.pid, "VmHWM").unwrap();
    let report = Report {
        idle,
        peak,
        elapsed,
        slowest_ping: Duration::from_micros(slowest.load(Ordering::Relaxed)),
    };
    (outcome, report)
}

/// Sends `request` on a new stream (finished) and returns its receive side.
async fn send(
    conn: &quinn::Connection,
    request: &Request,
) -> (quinn::SendStream, quinn::RecvStream) {
    let (mut send, recv) = conn.open_bi().await.unwrap();
    send.write_all(&frame(request)).await.unwrap();
    (send, recv)
}

/// The error code a request is answered with (its first frame).
async fn answer_code(conn: &quinn::Connection, request: &Request) -> (ErrorCode, String) {
    let (mut tx, mut recv) = send(conn, request).await;
    let _ = tx.finish();
    match read_frame::<Response>(&mut recv, &mut Vec::new()).await {
        Some(Response::Error(e)) => (e.code, e.message),
        other => panic!("expected an error, got {other:?}"),
    }
}

fn list(selector: Selector) -> Request {
    Request::List {
        root: "logs".into(),
        selector,
        hash: false,
    }
}

fn entry(path: &str, size: u64) -> FileEntry {
    FileEntry {
        path: path.into(),
        size,
        mtime: Mtime::default(),
        mode: 0o644,
        hash: Some([1; 32]),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_patterns_are_refused_before_they_are_parsed() {
    let target = Target::start();
    let (codes, report) = attack(&target, |conn| async move {
        let regex = |r: String| {
            list(Selector {
                regex: Some(r),
                ..Selector::all()
            })
        };
        let glob = |g: String| {
            list(Selector {
                glob: Some(g),
                ..Selector::all()
            })
        };
        // ~1 MB of repeated Unicode classes: 3.2 GB before the size limit, before the fix.
        let mut codes = vec![answer_code(&conn, &regex("\\w".repeat(500_000))).await];
        codes.push(answer_code(&conn, &glob("{a,*}".repeat(200_000))).await);
        // Short, but huge once compiled, or deeply nested.
        codes.push(answer_code(&conn, &regex("(\\w{200}){200}".into())).await);
        codes.push(
            answer_code(
                &conn,
                &regex(format!("{}a{}", "(".repeat(1000), ")".repeat(1000))),
            )
            .await,
        );
        codes.push(answer_code(&conn, &glob("{a,".repeat(500) + &"}".repeat(500))).await);
        codes
    })
    .await;
    report.check("1 MB regex and glob, huge and nested patterns");
    assert_eq!(codes[0].0, ErrorCode::LimitExceeded, "{codes:?}");
    assert!(codes[0].1.contains("regex length"), "{codes:?}");
    assert_eq!(codes[1].0, ErrorCode::LimitExceeded, "{codes:?}");
    assert!(codes[1].1.contains("glob length"), "{codes:?}");
    assert_eq!(codes[2].0, ErrorCode::BadArgs, "{codes:?}");
    assert_eq!(codes[3].0, ErrorCode::BadArgs, "{codes:?}");
    assert_eq!(codes[4].0, ErrorCode::LimitExceeded, "{codes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amplifying_selections_cost_one_walk() {
    let target = Target::start();
    let (outcome, report) = attack(&target, |conn| async move {
        let paths = |n: usize| {
            list(Selector {
                paths: vec![String::new(); n],
                ..Selector::all()
            })
        };
        // A million empty paths (~1 MB): 2.9 GB and no answer in 60 s before the fix.
        let million = answer_code(&conn, &paths(1_000_000)).await;
        let over = answer_code(&conn, &paths(65_536)).await;
        // 4096 paths naming the whole root, with hashes: one walk, each file hashed once.
        let mut request = paths(4096);
        if let Request::List { hash, .. } = &mut request {
            *hash = true;
        }
        let (mut tx, mut recv) = send(&conn, &request).await;
        let _ = tx.finish();
        let mut buf = Vec::new();
        assert!(matches!(
            read_frame::<Response>(&mut recv, &mut buf).await,
            Some(Response::Accepted)
        ));
        let mut listed = Vec::new();
        loop {
            match read_frame::<ListFrame>(&mut recv, &mut buf).await {
                Some(ListFrame::Entries(e)) => listed.extend(e),
                Some(ListFrame::End { .. }) => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        // Too many `Get` items, by count and by sequence length.
        let get = |n: usize| Request::Get {
            root: "logs".into(),
            items: vec![
                GetItem {
                    path: "sub/1.log".into(),
                    range: None
                };
                n
            ],
        };
        let items = answer_code(&conn, &get(5000)).await;
        let sequence = answer_code(&conn, &get(100_000)).await;
        (million, over, listed, items, sequence)
    })
    .await;
    let (million, over, listed, items, sequence) = outcome;
    report.check(
        "1M empty paths, 65,536 paths, 4096 hashed copies of the root, 5000 and 100,000 get items",
    );
    assert_eq!(million.0, ErrorCode::Protocol, "{million:?}");
    assert_eq!(over.0, ErrorCode::LimitExceeded, "{over:?}");
    assert!(over.1.contains("list paths"), "{over:?}");
    assert_eq!(listed.len(), 21, "each file listed once, the FIFO skipped");
    assert!(listed.iter().all(|e| e.hash.is_some()));
    assert_eq!(items.0, ErrorCode::LimitExceeded, "{items:?}");
    assert!(items.1.contains("get items"), "{items:?}");
    assert_eq!(sequence.0, ErrorCode::Protocol, "{sequence:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_sizes_are_checked_before_anything_is_planned() {
    let target = Target::start();
    let (codes, report) = attack(&target, |conn| async move {
        let check = |entries: Vec<FileEntry>, range_size: u64| Request::PutCheck {
            dest: String::new(),
            entries,
            range_size,
        };
        // 4 GiB in 1-byte ranges: 15 GB before the fix.
        let mut codes = vec![answer_code(&conn, &check(vec![entry("a", 4 << 30)], 1)).await];
        // 2^52 bytes: 9 GB and a 5 GB answer frame before the fix.
        codes.push(answer_code(&conn, &check(vec![entry("a", 1 << 52)], 4 << 20)).await);
        codes.push(answer_code(&conn, &check(vec![entry("a", 1); 2], 4 << 20)).await);
        codes.push(answer_code(&conn, &check(vec![entry("a", 1); 5000], 4 << 20)).await);
        // A `Put` declaring more than an operation may hold, and a range of 2^40 bytes: refused
        // before a byte of them is read.
        let put = |items: Vec<PutItem>| Request::Put {
            dest: String::new(),
            items,
            range_size: 4 << 20,
        };
        let whole = |i: usize| PutItem {
            entry: entry(&format!("f{i}"), 15 << 20),
            range: None,
            hash: [1; 32],
        };
        codes.push(answer_code(&conn, &put((0..3).map(whole).collect())).await);
        let ranged = PutItem {
            entry: entry("r", 1 << 52),
            range: Some(ByteRange {
                index: 0,
                offset: 0,
                len: 1 << 40,
            }),
            hash: [1; 32],
        };
        codes.push(answer_code(&conn, &put(vec![ranged])).await);
        codes
    })
    .await;
    report
        .check("put-check of 4 GiB in 1-byte ranges and of 2^52 bytes, 45 MiB and 2^40-byte puts");
    let expect = [
        (ErrorCode::BadArgs, "range size"),
        (ErrorCode::LimitExceeded, "ranges per file"),
        (ErrorCode::BadArgs, "named twice"),
        (ErrorCode::LimitExceeded, "put-check entries"),
        (ErrorCode::LimitExceeded, "put bytes"),
        (ErrorCode::LimitExceeded, "put piece bytes"),
    ];
    for ((code, message), (want, words)) in codes.iter().zip(expect) {
        assert_eq!(*code, want, "{message}");
        assert!(message.contains(words), "{message:?} should name {words:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_4096_entry_put_check_of_huge_files_gets_a_small_answer() {
    let target = Target::start();
    let (needs, report) = attack(&target, |conn| async move {
        // The most ranges each file may have: 4096 × 2^20 ranges declared in one request.
        let entries = (0..4096)
            .map(|i| entry(&format!("huge{i}"), 4 << 40))
            .collect();
        let request = Request::PutCheck {
            dest: String::new(),
            entries,
            range_size: 4 << 20,
        };
        let (mut tx, mut recv) = send(&conn, &request).await;
        let _ = tx.finish();
        read_frame::<Response>(&mut recv, &mut Vec::new()).await
    })
    .await;
    report.check("put-check of 4096 files of 4 TiB");
    match needs {
        Some(Response::Needs(needs)) => {
            assert_eq!(needs.len(), 4096);
            assert!(needs.iter().all(|n| *n == quicswarm::files::Need::Whole));
        }
        other => panic!("expected Needs, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_gets_hold_no_more_than_their_budget() {
    let target = Target::start();
    let ((), report) = attack(&target, |conn| async move {
        // Eight `Get`s of 64 ranges of 16 MiB each (8 GiB in all), never read: 13.6 GB before
        // the fix.
        let items: Vec<GetItem> = (0..64u32)
            .map(|i| GetItem {
                path: "big.bin".into(),
                range: Some(ByteRange {
                    index: i,
                    offset: u64::from(i % 64) * (16 << 20),
                    len: 16 << 20,
                }),
            })
            .collect();
        let mut streams = Vec::new();
        for _ in 0..8 {
            let request = Request::Get {
                root: "logs".into(),
                items: items.clone(),
            };
            streams.push(send(&conn, &request).await);
        }
        // Long enough for the gateway to fill everything it would fill.
        tokio::time::sleep(Duration::from_secs(3)).await;
        drop(streams);
    })
    .await;
    report.check("8 unread gets of 64 x 16 MiB ranges");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_handler_closes_the_connection_promptly() {
    let target = Target::start();
    let (closed_in, report) = attack(&target, |conn| async move {
        let (mut tx, mut recv) = send(&conn, &Request::CloseHandler).await;
        let _ = tx.finish();
        assert!(matches!(
            read_frame::<Response>(&mut recv, &mut Vec::new()).await,
            Some(Response::Done)
        ));
        let start = Instant::now();
        // Before the fix the connection stayed open, accepting streams, for 40 s and more.
        let reason = tokio::time::timeout(Duration::from_secs(5), conn.closed())
            .await
            .expect("closed by the gateway");
        assert!(
            matches!(&reason, quinn::ConnectionError::ApplicationClosed(c)
                if c.error_code.into_inner() == u64::from(ErrorCode::HandlerClosed.to_u32())),
            "{reason:?}"
        );
        assert!(conn.open_bi().await.is_err(), "nothing more is accepted");
        start.elapsed()
    })
    .await;
    report.check("close-handler");
    assert!(
        closed_in < Duration::from_secs(2),
        "closed after {closed_in:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn special_files_are_refused_without_blocking() {
    let target = Target::start();
    let (frames, report) = attack(&target, |conn| async move {
        let request = Request::Get {
            root: "logs".into(),
            items: vec![
                GetItem {
                    path: "sub/pipe".into(),
                    range: None,
                };
                64
            ],
        };
        let (mut tx, mut recv) = send(&conn, &request).await;
        let _ = tx.finish();
        let mut buf = Vec::new();
        let mut frames = Vec::new();
        assert!(matches!(
            read_frame::<Response>(&mut recv, &mut buf).await,
            Some(Response::Accepted)
        ));
        while let Some(frame) = read_frame::<FileFrame>(&mut recv, &mut buf).await {
            let end = matches!(frame, FileFrame::End);
            frames.push(frame);
            if end {
                break;
            }
        }
        frames
    })
    .await;
    report.check("64 gets of a FIFO");
    assert_eq!(frames.len(), 65, "64 failures and the end");
    assert!(frames[..64]
        .iter()
        .all(|f| matches!(f, FileFrame::Failed { error, .. } if error.message.contains("not a regular file"))));
}

// The mirror image: a hostile gateway against the `quicswarm get` process.

/// What the fake gateway lists.
#[derive(Clone, Copy)]
enum Lie {
    /// One file of 2^52 bytes.
    HugeFile,
    /// Listing frames without end.
    EndlessListing,
}

async fn fake_gateway(lie: Lie) -> (String, Fingerprint) {
    let identity = quicswarm::Identity::self_signed(&[]).unwrap();
    let fp = identity.fingerprint();
    let tls = identity.server_config().unwrap();
    let config = quinn::ServerConfig::with_crypto(Arc::new(
        quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap(),
    ));
    let endpoint = quinn::Endpoint::server(config, "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = endpoint.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            tokio::spawn(serve_lies(incoming, lie));
        }
    });
    (addr, fp)
}

async fn serve_lies(incoming: quinn::Incoming, lie: Lie) {
    let Ok(conn) = incoming.await else { return };
    let Ok((mut send, mut recv)) = conn.accept_bi().await else {
        return;
    };
    let mut buf = Vec::new();
    let Some(_hello) = read_frame::<quicswarm::proto::Hello>(&mut recv, &mut buf).await else {
        return;
    };
    let welcome = quicswarm::proto::HelloReply::Welcome(quicswarm::proto::Welcome {
        handler_id: 1,
        pool_used: 1,
        pool_size: 5,
        max_frame_len: 16 << 20,
        subroutines: vec![],
    });
    let _ = send.write_all(&frame(&welcome)).await;
    let _ = send.finish();
    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
        tokio::spawn(async move {
            let mut buf = Vec::new();
            let Some(request) = read_frame::<Request>(&mut recv, &mut buf).await else {
                return;
            };
            if !matches!(request, Request::List { .. }) {
                return;
            }
            let _ = send.write_all(&frame(&Response::Accepted)).await;
            match lie {
                Lie::HugeFile => {
                    let entries = ListFrame::Entries(vec![entry("huge.bin", 1 << 52)]);
                    let _ = send.write_all(&frame(&entries)).await;
                    let _ = send.write_all(&frame(&ListFrame::End { skipped: 0 })).await;
                }
                Lie::EndlessListing => {
                    let entries: Vec<FileEntry> =
                        (0..1024).map(|i| entry(&format!("f{i}"), 1)).collect();
                    let chunk = frame(&ListFrame::Entries(entries));
                    // Bounded: the client gives up long before (or the stream is stopped).
                    for _ in 0..100_000 {
                        if send.write_all(&chunk).await.is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = send.finish();
            let _ = send.stopped().await;
        });
    }
}

/// Runs `quicswarm get` against a fake gateway; returns its exit status, stderr, its peak RSS
/// (polled while it runs) and how long it took.
async fn get_from(lie: Lie, dest: &Path) -> (bool, String, u64, Duration) {
    let (addr, fp) = fake_gateway(lie).await;
    let start = Instant::now();
    let child = std::process::Command::new(BIN)
        .args(["get", &addr, "logs"])
        .arg(dest)
        .args(["--fingerprint", &fp.to_string(), "--timeout", "30"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let waiter = tokio::task::spawn_blocking(move || child.wait_with_output());
    let mut peak = 0;
    while !waiter.is_finished() && start.elapsed() < WAIT * 2 {
        if let Some(hwm) = memory(pid, "VmHWM") {
            peak = peak.max(hwm);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let out = waiter.await.unwrap().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.success(), stderr, peak, start.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_that_lies_about_sizes_cannot_grow_the_client() {
    for (lie, what, words) in [
        (
            Lie::HugeFile,
            "a listed file of 2^52 bytes",
            "ranges per file",
        ),
        (
            Lie::EndlessListing,
            "listing frames without an end",
            "listing",
        ),
    ] {
        let dest = tempfile::tempdir().unwrap();
        let (ok, stderr, peak, took) = get_from(lie, dest.path()).await;
        println!(
            "hostile gateway: {what}: client peak {:.1} MiB, exited in {:.3} s",
            peak as f64 / MIB,
            took.as_secs_f64()
        );
        assert!(!ok, "{what}: the download cannot succeed");
        assert!(stderr.contains(words), "{what}: {stderr}");
        assert!(peak < MARGIN * 2, "{what}: the client reached {peak} bytes");
        assert!(took < Duration::from_secs(20), "{what}: took {took:?}");
        assert!(
            std::fs::read_dir(dest.path()).unwrap().next().is_none(),
            "{what}: nothing written"
        );
    }
}

//! Swarm file transfer: round trips, selection, refusals, resume, a lost connection,
//! concurrent uploads.

use std::{
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use crate::harness::spawn_gateway;
use quicswarm::{
    files::{Selector, Swarm, TransferError, TransferOptions},
    CallError, ErrorCode,
};
use quicswarm_tests::{tree, within, TestGateway};

/// Small ranges so the 3 MiB file travels in many pieces.
fn options() -> TransferOptions {
    let mut o = TransferOptions::default();
    o.range_size = 256 * 1024;
    o.batch_files = 3;
    o
}

async fn swarm(gw: &TestGateway, n: usize) -> Swarm {
    within("swarm", Swarm::connect(&gw.controller(), &gw.addr, n))
        .await
        .unwrap()
}

struct Served {
    gw: TestGateway,
    _dirs: tempfile::TempDir,
    source: PathBuf,
    upload: PathBuf,
}

async fn served() -> Served {
    let dirs = tempfile::tempdir().unwrap();
    let source = dirs.path().join("source");
    let upload = dirs.path().join("upload");
    tree::write(&source);
    std::fs::create_dir_all(&upload).unwrap();
    let (s, u) = (source.clone(), upload.clone());
    let gw = spawn_gateway(move |b| b.serve("data", s).upload_dir(u)).await;
    Served {
        gw,
        _dirs: dirs,
        source,
        upload,
    }
}

#[tokio::test]
async fn download_round_trip_keeps_content_mode_and_mtime() {
    let s = served().await;
    let swarm = swarm(&s.gw, 3).await;
    let dest = tempfile::tempdir().unwrap();
    let summary = within(
        "download",
        swarm.download("data", &Selector::all(), dest.path(), &options()),
    )
    .await
    .unwrap();
    assert_eq!(summary.files, tree::FILES.len() as u64);
    assert_eq!(
        summary.bytes,
        tree::FILES.iter().map(|f| f.1 as u64).sum::<u64>()
    );
    assert_eq!(summary.skipped, 0);
    assert_eq!(summary.verified.len(), tree::FILES.len());
    tree::assert_same(dest.path(), &tree::all());

    // Again: everything is skipped, nothing moves.
    let again = within(
        "download again",
        swarm.download("data", &Selector::all(), dest.path(), &options()),
    )
    .await
    .unwrap();
    assert_eq!(
        (again.files, again.bytes, again.skipped),
        (0, 0, tree::FILES.len() as u64)
    );
}

#[tokio::test]
async fn big_files_in_ranges_of_whole_mebibytes_round_trip() {
    // Ranges of 1 and 2 MiB are made of the pieces the gateway hashed for the listing: their
    // hashes come from those pieces, the client merges them into the whole file's.
    let s = served().await;
    let swarm = swarm(&s.gw, 2).await;
    for mib in [1, 2] {
        let dest = tempfile::tempdir().unwrap();
        let mut o = options();
        o.range_size = mib << 20;
        let summary = within(
            "download",
            swarm.download("data", &Selector::all(), dest.path(), &o),
        )
        .await
        .unwrap();
        assert_eq!(summary.files, tree::FILES.len() as u64, "{mib} MiB ranges");
        tree::assert_same(dest.path(), &tree::all());

        // The same the other way: the client hashed the pieces when it listed its files.
        let up = format!("up{mib}");
        let summary = within(
            "upload",
            swarm.upload(std::slice::from_ref(&s.source), &up, &o),
        )
        .await
        .unwrap();
        assert_eq!(summary.files, tree::FILES.len() as u64, "{mib} MiB ranges");
        tree::assert_same(&s.upload.join(&up).join("source"), &tree::all());
    }
}

/// Pieces larger than a gateway reads ahead (4 MiB) are sent chunk by chunk and hashed as
/// they go: ranges that are BLAKE3 subtrees (8 MiB), ranges that are not (6 MiB), and a
/// whole file of 6 MiB.
#[tokio::test]
async fn pieces_larger_than_the_read_ahead_are_streamed_and_verified() {
    let dirs = tempfile::tempdir().unwrap();
    let source = dirs.path().join("source");
    let big = tree::content("big", 20 << 20);
    let whole = tree::content("whole", 6 << 20);
    tree::write_file(&source, "big.bin", &big, 0o644, 1_700_000_000);
    tree::write_file(&source, "whole.bin", &whole, 0o600, 1_700_000_000);
    let src = source.clone();
    let gw = spawn_gateway(move |b| b.serve("data", src)).await;
    let swarm = swarm(&gw, 2).await;
    for mib in [8u64, 6] {
        let dest = tempfile::tempdir().unwrap();
        let mut o = TransferOptions::default();
        o.range_size = mib << 20;
        let summary = within(
            "download",
            swarm.download("data", &Selector::all(), dest.path(), &o),
        )
        .await
        .unwrap();
        assert_eq!(summary.files, 2, "{mib} MiB ranges");
        assert!(std::fs::read(dest.path().join("big.bin")).unwrap() == big);
        assert!(std::fs::read(dest.path().join("whole.bin")).unwrap() == whole);
    }
}

/// Only permission bits travel: a setuid, setgid or sticky file arrives without those bits,
/// whichever way it goes.
#[tokio::test]
async fn setuid_setgid_and_sticky_bits_are_dropped_both_ways() {
    use std::os::unix::fs::PermissionsExt;
    let s = served().await;
    let local = tempfile::tempdir().unwrap();
    let file = tree::write_file(local.path(), "suid", b"#!/bin/sh\n", 0o7755, 1_700_000_000);
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o7777,
        0o7755
    );
    tree::write_file(&s.source, "served-suid", b"x", 0o4755, 1_700_000_000);
    let swarm = swarm(&s.gw, 1).await;
    within("upload", swarm.upload(&[file], "", &options()))
        .await
        .unwrap();
    let uploaded = std::fs::metadata(s.upload.join("suid")).unwrap();
    assert_eq!(uploaded.permissions().mode() & 0o7777, 0o755);
    let dest = tempfile::tempdir().unwrap();
    within(
        "download",
        swarm.download("data", &just("served-suid"), dest.path(), &options()),
    )
    .await
    .unwrap();
    let downloaded = std::fs::metadata(dest.path().join("served-suid")).unwrap();
    assert_eq!(downloaded.permissions().mode() & 0o7777, 0o755);
}

#[tokio::test]
async fn upload_round_trip_of_a_folder() {
    let s = served().await;
    let swarm = swarm(&s.gw, 2).await;
    let summary = within(
        "upload",
        swarm.upload(
            std::slice::from_ref(&s.source),
            "incoming/robot1",
            &options(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(summary.files, tree::FILES.len() as u64);
    tree::assert_same(&s.upload.join("incoming/robot1/source"), &tree::all());
    let again = within(
        "upload again",
        swarm.upload(
            std::slice::from_ref(&s.source),
            "incoming/robot1",
            &options(),
        ),
    )
    .await
    .unwrap();
    assert_eq!((again.files, again.skipped), (0, tree::FILES.len() as u64));
    // A single file travels under its own name.
    let one = s.source.join("a.log");
    within("upload one", swarm.upload(&[one], "", &options()))
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(s.upload.join("a.log")).unwrap(),
        tree::content("a.log", 1000)
    );
}

#[tokio::test]
async fn selection_by_glob_regex_paths_and_depth() {
    let s = served().await;
    let client = s.gw.client().await;
    let names =
        |l: quicswarm::files::Listing| l.entries.into_iter().map(|e| e.path).collect::<Vec<_>>();

    let all = client.list("data", &Selector::all()).await.unwrap();
    assert_eq!(all.entries.len(), tree::FILES.len());
    let a = all.entries.iter().find(|e| e.path == "a.log").unwrap();
    assert_eq!(
        (a.size, a.mode, a.mtime.secs, a.mtime.nanos),
        (1000, 0o644, 1_600_000_000, 123_000_000)
    );

    let logs = Selector {
        glob: Some("**/*.log".into()),
        ..Selector::all()
    };
    assert_eq!(
        names(client.list("data", &logs).await.unwrap()),
        vec!["a.log", "sub/b.log", "sub/deep/d.log"]
    );
    let top_logs = Selector {
        glob: Some("*.log".into()),
        ..Selector::all()
    };
    assert_eq!(
        names(client.list("data", &top_logs).await.unwrap()),
        vec!["a.log"]
    );
    let regex = Selector {
        regex: Some(r"^sub/.*\.(bin|log)$".into()),
        ..Selector::all()
    };
    assert_eq!(
        names(client.list("data", &regex).await.unwrap()),
        vec![
            "sub/b.log",
            "sub/c.bin",
            "sub/deep/big.bin",
            "sub/deep/d.log"
        ]
    );
    let both = Selector {
        glob: Some("**/*.log".into()),
        regex: Some("deep".into()),
        ..Selector::all()
    };
    assert_eq!(
        names(client.list("data", &both).await.unwrap()),
        vec!["sub/deep/d.log"]
    );
    let shallow = Selector {
        dir: "sub".into(),
        recursive: false,
        ..Selector::default()
    };
    assert_eq!(
        names(client.list("data", &shallow).await.unwrap()),
        vec!["sub/b.log", "sub/c.bin"]
    );
    let explicit = Selector {
        paths: vec!["other/e.txt".into(), "sub/deep".into()],
        ..Selector::all()
    };
    assert_eq!(
        names(client.list("data", &explicit).await.unwrap()),
        vec!["other/e.txt", "sub/deep/big.bin", "sub/deep/d.log"]
    );

    // Download only the logs with explicit paths.
    let dest = tempfile::tempdir().unwrap();
    let pick = Selector {
        paths: vec!["a.log".into(), "sub/b.log".into()],
        ..Selector::all()
    };
    Swarm::new(vec![client.clone()])
        .download("data", &pick, dest.path(), &options())
        .await
        .unwrap();
    tree::assert_same(dest.path(), &["a.log", "sub/b.log"]);

    let bad = Selector {
        glob: Some("[".into()),
        ..Selector::all()
    };
    assert!(matches!(
        client.list("data", &bad).await,
        Err(CallError::BadArgs(_))
    ));
    match client.list("nope", &Selector::all()).await {
        Err(CallError::Remote { code, .. }) => assert_eq!(code, ErrorCode::NotFound),
        other => panic!("expected NotFound, got {other:?}"),
    }
}

#[tokio::test]
async fn gateway_refuses_paths_outside_its_roots() {
    let s = served().await;
    // A symlink inside the root to a file outside it, and one to a folder outside.
    let outside = s._dirs.path().join("secret.txt");
    std::fs::write(&outside, b"secret").unwrap();
    std::os::unix::fs::symlink(&outside, s.source.join("link.txt")).unwrap();
    std::os::unix::fs::symlink(s._dirs.path(), s.source.join("linkdir")).unwrap();
    let client = s.gw.client().await;

    let listing = client.list("data", &Selector::all()).await.unwrap();
    assert!(
        listing.entries.iter().all(|e| !e.path.starts_with("link")),
        "symlinks are not listed"
    );
    assert_eq!(listing.skipped, 2);

    for hostile in [
        "../secret.txt",
        "/etc/passwd",
        "C:/Windows/win.ini",
        "\\\\server\\share",
        "a\0b",
        "sub/../../x",
        "link.txt",
        "linkdir/secret.txt",
        "CON",
        "a:b",
    ] {
        let sel = Selector {
            paths: vec![hostile.to_string()],
            ..Selector::all()
        };
        match client.list("data", &sel).await {
            Err(CallError::PermissionDenied(m)) => assert!(m.contains("refused"), "{hostile}: {m}"),
            other => panic!("{hostile:?}: expected PermissionDenied, got {other:?}"),
        }
        let sel = Selector {
            dir: hostile.to_string(),
            ..Selector::all()
        };
        assert!(
            client.list("data", &sel).await.is_err(),
            "{hostile:?} as dir"
        );
    }
    // The gateway is unharmed.
    within("ping", client.ping()).await.unwrap();
}

#[tokio::test]
async fn uploads_are_refused_without_an_upload_folder_and_outside_it() {
    let dirs = tempfile::tempdir().unwrap();
    tree::write(dirs.path());
    let d = dirs.path().to_path_buf();
    let gw = spawn_gateway(move |b| b.serve("data", d)).await;
    let swarm = swarm(&gw, 1).await;
    match within(
        "upload",
        swarm.upload(&[dirs.path().join("a.log")], "", &options()),
    )
    .await
    {
        Err(TransferError::Call(CallError::PermissionDenied(m))) => {
            assert!(m.contains("no uploads"), "{m}")
        }
        other => panic!("expected PermissionDenied, got {other:?}"),
    }
    let s = served().await;
    let swarm = self::swarm(&s.gw, 1).await;
    for dest in ["../x", "/abs", "a/../../b", "C:/x"] {
        assert!(
            matches!(
                swarm
                    .upload(&[s.source.join("a.log")], dest, &options())
                    .await,
                Err(TransferError::UnsafePath { .. })
            ),
            "{dest}"
        );
    }
    let mut nothing = Vec::new();
    tree::list_all(&s.upload, &s.upload, &mut nothing);
    assert!(nothing.is_empty(), "nothing written: {nothing:?}");
}

/// Cancels a transfer once some files are stored; returns how many were.
async fn interrupted<F>(run: F) -> u64
where
    F: FnOnce(
        TransferOptions,
    ) -> futures_util::future::BoxFuture<
        'static,
        Result<quicswarm::files::TransferSummary, TransferError>,
    >,
{
    let (tx, rx) = tokio::sync::oneshot::channel::<u64>();
    let tx = std::sync::Mutex::new(Some(tx));
    let mut o = options();
    o.batch_files = 1;
    o.streams_per_client = 1;
    o.progress = Some(Arc::new(move |p: &quicswarm::files::Progress| {
        if p.files_done >= 2 && p.bytes_done > 0 {
            if let Some(tx) = tx.lock().unwrap().take() {
                let _ = tx.send(p.files_done);
            }
        }
    }));
    let transfer = run(o);
    tokio::select! {
        r = transfer => panic!("the transfer finished before it could be interrupted: {r:?}"),
        done = rx => done.unwrap(),
    }
}

#[tokio::test]
async fn interrupted_download_resumes_with_only_the_rest() {
    let s = served().await;
    let swarm = swarm(&s.gw, 1).await;
    let dest = tempfile::tempdir().unwrap();
    let (sw, d) = (swarm.clone(), dest.path().to_path_buf());
    let done = within(
        "interrupted download",
        interrupted(move |o| {
            Box::pin(async move { sw.download("data", &Selector::all(), d, &o).await })
        }),
    )
    .await;
    assert!(done >= 2);
    // Whatever is under a final name is complete and correct.
    let mut present = Vec::new();
    tree::list_all(dest.path(), dest.path(), &mut present);
    let finals: Vec<&str> = tree::all()
        .into_iter()
        .filter(|p| present.iter().any(|q| q == p))
        .collect();
    for &(rel, size, ..) in tree::FILES.iter().filter(|f| finals.contains(&f.0)) {
        assert_eq!(
            std::fs::read(dest.path().join(rel)).unwrap(),
            tree::content(rel, size),
            "{rel}"
        );
    }
    let total_bytes: u64 = tree::FILES.iter().map(|f| f.1 as u64).sum();
    let rest = within(
        "resume",
        swarm.download("data", &Selector::all(), dest.path(), &options()),
    )
    .await
    .unwrap();
    assert!(
        rest.skipped >= 2,
        "files stored before the interruption are skipped: {rest:?}"
    );
    assert!(rest.files + rest.skipped == tree::FILES.len() as u64);
    assert!(
        rest.bytes < total_bytes,
        "only the rest moves: {} of {total_bytes}",
        rest.bytes
    );
    tree::assert_same(dest.path(), &tree::all());
}

/// A selector of one file.
fn just(path: &str) -> Selector {
    Selector {
        paths: vec![path.into()],
        ..Selector::all()
    }
}

/// Starts downloading `pick` into `dest` one range at a time and drops the download once
/// 2 MiB are stored: a part file and its state are left, nothing under the final name.
async fn cut_download(swarm: &Swarm, pick: &Selector, dest: &std::path::Path) {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let tx = std::sync::Mutex::new(Some(tx));
    let mut o = options();
    o.streams_per_client = 1;
    o.progress = Some(Arc::new(move |p: &quicswarm::files::Progress| {
        if p.bytes_done >= 2 << 20 {
            if let Some(tx) = tx.lock().unwrap().take() {
                let _ = tx.send(());
            }
        }
    }));
    tokio::select! {
        r = swarm.download("data", pick, dest, &o) => panic!("finished too early: {r:?}"),
        _ = rx => {}
    }
    assert!(
        !dest.join("big.bin").exists(),
        "no partial file under the final name"
    );
}

#[tokio::test]
async fn a_stored_range_lost_before_a_resume_is_caught_before_the_rename() {
    // As after a power cut: the state says a range was stored, the disk lost it. The resumed
    // download cannot merge that range's hash (it was checked by another run): it reads the
    // assembled file again and refuses it.
    let dirs = tempfile::tempdir().unwrap();
    tree::write_file(
        dirs.path(),
        "big.bin",
        &tree::content("big.bin", 8 << 20),
        0o600,
        1_700_000_000,
    );
    let src = dirs.path().to_path_buf();
    let gw = spawn_gateway(move |b| b.serve("data", src)).await;
    let swarm = swarm(&gw, 1).await;
    let dest = tempfile::tempdir().unwrap();
    let pick = just("big.bin");
    cut_download(&swarm, &pick, dest.path()).await;
    let part = std::fs::read_dir(dest.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".qs-part"))
        .expect("a part file is left");
    let file = std::fs::OpenOptions::new().write(true).open(&part).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &[0u8; 4096], 0).unwrap();
    drop(file);

    let resumed = within(
        "resume",
        swarm.download("data", &pick, dest.path(), &options()),
    )
    .await;
    quicswarm_tests::assert_whole_file_mismatch(resumed, "resumed over a lost range");
    assert!(
        !dest.path().join("big.bin").exists(),
        "nothing under the final name"
    );
    // The bad part is gone: the next run moves the whole file and gets it right.
    let again = within(
        "download again",
        swarm.download("data", &pick, dest.path(), &options()),
    )
    .await
    .unwrap();
    assert_eq!(again.bytes, 8 << 20);
    assert_eq!(
        std::fs::read(dest.path().join("big.bin")).unwrap(),
        tree::content("big.bin", 8 << 20)
    );
}

#[tokio::test]
async fn interrupted_big_file_resumes_from_verified_ranges() {
    let dirs = tempfile::tempdir().unwrap();
    let big = tree::write_file(
        dirs.path(),
        "big.bin",
        &tree::content("big.bin", 8 << 20),
        0o600,
        1_700_000_000,
    );
    let upload = dirs.path().join("up");
    std::fs::create_dir_all(&upload).unwrap();
    let (src, up) = (dirs.path().to_path_buf(), upload.clone());
    let gw = spawn_gateway(move |b| b.serve("data", src).upload_dir(up)).await;
    let swarm = swarm(&gw, 1).await;

    // Download, cut after some ranges.
    let dest = tempfile::tempdir().unwrap();
    let pick = just("big.bin");
    cut_download(&swarm, &pick, dest.path()).await;
    let rest = within(
        "resume",
        swarm.download("data", &pick, dest.path(), &options()),
    )
    .await
    .unwrap();
    assert!(
        rest.bytes < 8 << 20 && rest.bytes > 0,
        "resumed ranges only: {} bytes",
        rest.bytes
    );
    assert_eq!(
        std::fs::read(dest.path().join("big.bin")).unwrap(),
        std::fs::read(&big).unwrap()
    );
    let mut left = Vec::new();
    tree::list_all(dest.path(), dest.path(), &mut left);
    assert_eq!(left, vec!["big.bin"], "part and state files are gone");

    // Upload, cut after some ranges, resume.
    let mut o = options();
    o.streams_per_client = 1;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let tx = std::sync::Mutex::new(Some(tx));
    o.progress = Some(Arc::new(move |p: &quicswarm::files::Progress| {
        if p.bytes_done >= 2 << 20 {
            if let Some(tx) = tx.lock().unwrap().take() {
                let _ = tx.send(());
            }
        }
    }));
    tokio::select! {
        r = swarm.upload(std::slice::from_ref(&big), "", &o) => panic!("finished too early: {r:?}"),
        _ = rx => {}
    }
    assert!(!upload.join("big.bin").exists());
    let rest = within(
        "resume upload",
        swarm.upload(std::slice::from_ref(&big), "", &options()),
    )
    .await
    .unwrap();
    assert!(
        rest.bytes < 8 << 20 && rest.bytes > 0,
        "resumed ranges only: {} bytes",
        rest.bytes
    );
    assert_eq!(
        std::fs::read(upload.join("big.bin")).unwrap(),
        std::fs::read(&big).unwrap()
    );
}

#[tokio::test]
async fn interrupted_upload_resumes_with_only_the_rest() {
    let s = served().await;
    let swarm = swarm(&s.gw, 1).await;
    let (sw, src) = (swarm.clone(), s.source.clone());
    within(
        "interrupted upload",
        interrupted(move |o| Box::pin(async move { sw.upload(&[src], "u", &o).await })),
    )
    .await;
    let rest = within(
        "resume",
        swarm.upload(std::slice::from_ref(&s.source), "u", &options()),
    )
    .await
    .unwrap();
    assert!(rest.skipped >= 2, "{rest:?}");
    tree::assert_same(&s.upload.join("u/source"), &tree::all());
}

#[tokio::test]
async fn a_lost_connection_leaves_the_job_to_the_others() {
    let s = served().await;
    let swarm = swarm(&s.gw, 3).await;
    let victim = swarm.clients()[0].connection().clone();
    let killed = Arc::new(AtomicBool::new(false));
    let k = killed.clone();
    let mut o = options();
    o.range_size = 64 * 1024;
    o.batch_files = 1;
    o.streams_per_client = 1;
    o.progress = Some(Arc::new(move |p: &quicswarm::files::Progress| {
        if p.bytes_done > 0 && !k.swap(true, Ordering::SeqCst) {
            victim.close(0, b"killed by the test");
        }
    }));
    let dest = tempfile::tempdir().unwrap();
    let summary = within(
        "download",
        swarm.download("data", &Selector::all(), dest.path(), &o),
    )
    .await
    .unwrap();
    assert!(
        killed.load(Ordering::SeqCst),
        "the connection was killed mid-job"
    );
    assert_eq!(summary.files, tree::FILES.len() as u64);
    tree::assert_same(dest.path(), &tree::all());
}

#[tokio::test]
async fn concurrent_uploads_to_one_name_never_mix() {
    let s = served().await;
    let dirs = tempfile::tempdir().unwrap();
    let a_dir = dirs.path().join("a");
    let b_dir = dirs.path().join("b");
    let size = 1 << 20;
    let a = tree::write_file(&a_dir, "same.bin", &vec![b'a'; size], 0o644, 1_600_000_000);
    let b = tree::write_file(&b_dir, "same.bin", &vec![b'b'; size], 0o644, 1_600_000_000);
    let small_a = tree::write_file(&a_dir, "small.txt", &vec![b'a'; 5000], 0o644, 1_600_000_000);
    let small_b = tree::write_file(&b_dir, "small.txt", &vec![b'b'; 5000], 0o644, 1_600_000_000);
    let (sa, sb) = (swarm(&s.gw, 2).await, swarm(&s.gw, 2).await);
    let mut o = options();
    o.range_size = 64 * 1024;
    let (pa, pb) = ([a, small_a], [b, small_b]);
    let (ra, rb) = tokio::join!(sa.upload(&pa, "", &o), sb.upload(&pb, "", &o));
    ra.unwrap();
    rb.unwrap();
    for (name, len) in [("same.bin", size), ("small.txt", 5000)] {
        let got = std::fs::read(s.upload.join(name)).unwrap();
        assert_eq!(got.len(), len);
        assert!(
            got.iter().all(|&c| c == got[0]),
            "{name} mixes both uploads"
        );
    }
}

/// Mounts a 1 MiB tmpfs (root only; skipped with a message otherwise).
struct TinyDisk {
    dir: tempfile::TempDir,
}

impl TinyDisk {
    fn mount() -> Option<Self> {
        let dir = tempfile::tempdir().ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("skipped: mounting a tmpfs needs root");
            return None;
        }
        Some(Self { dir })
    }
}

impl Drop for TinyDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

#[tokio::test]
async fn disk_full_is_a_typed_error_and_leaves_no_partial_file() {
    let Some(disk) = TinyDisk::mount() else {
        return;
    };
    let s = served().await;
    let swarm = swarm(&s.gw, 2).await;
    match within(
        "download",
        swarm.download("data", &Selector::all(), disk.dir.path(), &options()),
    )
    .await
    {
        Err(TransferError::Partial { failed, .. }) => {
            let big = failed
                .iter()
                .find(|(p, _)| p == "sub/deep/big.bin")
                .expect("the big file fails");
            assert!(
                matches!(big.1, TransferError::DiskFull { .. }),
                "{failed:?}"
            );
        }
        other => panic!("expected a disk-full failure, got {other:?}"),
    }
    let mut present = Vec::new();
    tree::list_all(disk.dir.path(), disk.dir.path(), &mut present);
    assert!(
        !present.iter().any(|p| p.contains("big.bin")),
        "no partial big file: {present:?}"
    );
    // What fitted is complete.
    for &(rel, size, ..) in tree::FILES
        .iter()
        .filter(|f| present.iter().any(|p| p == f.0))
    {
        assert_eq!(
            std::fs::read(disk.dir.path().join(rel)).unwrap(),
            tree::content(rel, size)
        );
    }
}

/// An uploader that vanishes mid-upload leaves no file under its final name, and the gateway
/// serves on.
#[tokio::test]
async fn an_uploader_vanishing_mid_upload_leaves_no_partial_file() {
    let s = served().await;
    let dirs = tempfile::tempdir().unwrap();
    let big = tree::write_file(
        dirs.path(),
        "big.bin",
        &tree::content("big.bin", 4 << 20),
        0o600,
        1_700_000_000,
    );
    let swarm = swarm(&s.gw, 1).await;
    let conn = swarm.clients()[0].connection().clone();
    let mut o = options();
    o.range_size = 256 * 1024;
    o.streams_per_client = 1;
    o.progress = Some(Arc::new(move |p: &quicswarm::files::Progress| {
        if p.bytes_done > 0 {
            conn.close(0, b"vanished");
        }
    }));
    let result = within("upload", swarm.upload(std::slice::from_ref(&big), "", &o)).await;
    assert!(result.is_err(), "the upload cannot complete: {result:?}");
    assert!(
        !s.upload.join("big.bin").exists(),
        "no partial file under the final name"
    );
    let other = within("another client", s.gw.controller().get_client(&s.gw.addr))
        .await
        .unwrap();
    within("ping", other.ping()).await.unwrap();
}

//! A hostile gateway, speaking the protocol by hand: it names files outside the destination,
//! or corrupts data. The client must refuse and write nothing under a final name.

use std::sync::Arc;

use bytes::Bytes;
use quicswarm::{
    files::{Selector, Swarm, TransferError, TransferOptions},
    proto::{
        transfer::{FileEntry, FileFrame, ListFrame, Mtime},
        HelloReply, Request, Response, Welcome,
    },
    Identity, Trust,
};
use quicswarm_tests::{
    controller, tree,
    wire::{frame, read_frame},
    within,
};

/// What the fake gateway does wrong.
#[derive(Clone, Copy)]
enum Evil {
    /// Lists this name.
    Name(&'static str),
    /// Sends `a.txt` with one byte flipped but the hash of the real content.
    Corrupt,
    /// Sends a big file's range with the right range hash but lies about the whole-file hash.
    WrongWholeHash,
}

const BIG: u64 = 300_000;

fn listing(evil: Evil) -> Vec<FileEntry> {
    let entry = |path: &str, data: &[u8]| FileEntry {
        path: path.into(),
        size: data.len() as u64,
        mtime: Mtime {
            secs: 1_600_000_000,
            nanos: 0,
        },
        mode: 0o644,
        hash: Some(*blake3::hash(data).as_bytes()),
    };
    match evil {
        Evil::Name(name) => vec![entry("fine.txt", b"fine"), entry(name, b"evil")],
        Evil::Corrupt => vec![entry("a.txt", b"the real content")],
        Evil::WrongWholeHash => {
            let mut e = entry("big.bin", &vec![1u8; BIG as usize]);
            e.hash = Some([9u8; 32]);
            vec![e]
        }
    }
}

async fn serve(endpoint: quinn::Endpoint, evil: Evil) {
    while let Some(incoming) = endpoint.accept().await {
        tokio::spawn(async move {
            let Ok(conn) = incoming.await else { return };
            let Ok((mut send, mut recv)) = conn.accept_bi().await else {
                return;
            };
            let mut buf = Vec::new();
            let _hello: quicswarm::proto::Hello = read_frame(&mut recv, &mut buf).await.unwrap();
            let welcome = HelloReply::Welcome(Welcome {
                handler_id: 1,
                pool_used: 1,
                pool_size: 5,
                max_frame_len: 1 << 20,
                subroutines: vec![],
            });
            send.write_all(&frame(&welcome)).await.unwrap();
            let _ = send.finish();
            while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let Some(request) = read_frame::<Request>(&mut recv, &mut buf).await else {
                        return;
                    };
                    let mut out = vec![frame(&Response::Accepted)];
                    match request {
                        Request::List { .. } => {
                            out.push(frame(&ListFrame::Entries(listing(evil))));
                            out.push(frame(&ListFrame::End { skipped: 0 }));
                        }
                        Request::Get { items, .. } => {
                            for (index, item) in items.iter().enumerate() {
                                let (mut data, len) = match (evil, item.range) {
                                    (_, Some(r)) => (vec![1u8; r.len as usize], r.len),
                                    (Evil::Corrupt, None) => (b"the real content".to_vec(), 16),
                                    (_, None) => (
                                        if item.path == "fine.txt" {
                                            b"fine".to_vec()
                                        } else {
                                            b"evil".to_vec()
                                        },
                                        4,
                                    ),
                                };
                                // Ranges carry their hash the way the protocol says: only
                                // the whole-file hash in the listing is wrong.
                                let hash = match item.range {
                                    Some(r) => quicswarm::files::range_hash(r.offset, &data),
                                    None => *blake3::hash(&data).as_bytes(),
                                };
                                if matches!(evil, Evil::Corrupt) {
                                    data[3] ^= 0xff;
                                }
                                let size = if item.range.is_some() { BIG } else { len };
                                out.push(frame(&FileFrame::Data {
                                    index: index as u32,
                                    len,
                                    size,
                                    mtime: Mtime {
                                        secs: 1_600_000_000,
                                        nanos: 0,
                                    },
                                    mode: 0o644,
                                }));
                                out.push(Bytes::from(data));
                                out.push(frame(&FileFrame::Hash(hash)));
                            }
                            out.push(frame(&FileFrame::End));
                        }
                        _ => return,
                    }
                    let _ = send.write_all_chunks(&mut out).await;
                    let _ = send.finish();
                    let _ = send.stopped().await;
                });
            }
        });
    }
}

async fn hostile_gateway(evil: Evil) -> (String, quicswarm::Fingerprint) {
    let identity = Identity::self_signed(&[]).unwrap();
    let fp = identity.fingerprint();
    let tls = identity.server_config().unwrap();
    let config = quinn::ServerConfig::with_crypto(Arc::new(
        quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap(),
    ));
    let endpoint = quinn::Endpoint::server(config, "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = endpoint.local_addr().unwrap().to_string();
    tokio::spawn(serve(endpoint, evil));
    (addr, fp)
}

async fn download(
    evil: Evil,
    dest: &std::path::Path,
) -> Result<quicswarm::files::TransferSummary, TransferError> {
    download_in_ranges_of(evil, dest, 100_000).await
}

async fn download_in_ranges_of(
    evil: Evil,
    dest: &std::path::Path,
    range_size: u64,
) -> Result<quicswarm::files::TransferSummary, TransferError> {
    let (addr, fp) = hostile_gateway(evil).await;
    let controller = controller(Trust::Fingerprints(vec![fp]));
    let swarm = within("connect", Swarm::connect(&controller, &addr, 2))
        .await
        .unwrap();
    let mut o = TransferOptions::default();
    o.range_size = range_size;
    within(
        "download",
        swarm.download("data", &Selector::all(), dest, &o),
    )
    .await
}

#[tokio::test]
async fn hostile_names_are_refused_and_nothing_is_written() {
    for name in [
        "../escape.txt",
        "/tmp/abs.txt",
        "a/../../up.txt",
        "C:/win.txt",
        "\\\\srv\\share\\x",
        "n\0ul",
        "CON",
        "a:b",
        "a//b",
    ] {
        let outer = tempfile::tempdir().unwrap();
        let dest = outer.path().join("dest");
        match download(Evil::Name(name), &dest).await {
            Err(TransferError::UnsafePath { path, .. }) => assert_eq!(path, name),
            other => panic!("{name:?}: expected UnsafePath, got {other:?}"),
        }
        let mut written = Vec::new();
        tree::list_all(outer.path(), outer.path(), &mut written);
        assert!(written.is_empty(), "{name:?}: wrote {written:?}");
    }
}

#[tokio::test]
async fn a_symlink_in_the_destination_is_not_followed() {
    let outer = tempfile::tempdir().unwrap();
    let dest = outer.path().join("dest");
    let elsewhere = outer.path().join("elsewhere");
    std::fs::create_dir_all(&dest).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, dest.join("sub")).unwrap();
    match download(Evil::Name("sub/x.txt"), &dest).await {
        Err(TransferError::Partial { failed, .. }) => {
            assert_eq!(failed.len(), 1);
            assert!(failed[0].1.to_string().contains("symlink"), "{failed:?}");
        }
        other => panic!("expected a refused file, got {other:?}"),
    }
    assert!(
        std::fs::read_dir(&elsewhere).unwrap().next().is_none(),
        "nothing written through the symlink"
    );
    assert_eq!(std::fs::read(dest.join("fine.txt")).unwrap(), b"fine");
}

#[tokio::test]
async fn corrupted_data_is_detected_and_not_stored() {
    let dest = tempfile::tempdir().unwrap();
    match download(Evil::Corrupt, dest.path()).await {
        Err(TransferError::Partial { failed, .. }) => {
            assert!(
                matches!(failed[0].1, TransferError::Integrity { .. }),
                "{failed:?}"
            )
        }
        other => panic!("expected an integrity failure, got {other:?}"),
    }
    let mut written = Vec::new();
    tree::list_all(dest.path(), dest.path(), &mut written);
    assert!(written.is_empty(), "nothing stored: {written:?}");

    // Every range checks out, the whole file does not: caught when the ranges' hashes are
    // merged (a power-of-two range size) and when the file is read again (any other).
    for range_size in [65_536, 100_000] {
        let dest = tempfile::tempdir().unwrap();
        let result = download_in_ranges_of(Evil::WrongWholeHash, dest.path(), range_size).await;
        quicswarm_tests::assert_whole_file_mismatch(result, &format!("ranges of {range_size}"));
        assert!(
            !dest.path().join("big.bin").exists(),
            "no file under the final name"
        );
    }
}

//! The gateway's `/metrics` endpoint, scraped over HTTP: the counters move with the work done.

use quicswarm::{
    demo::CounterArgs,
    files::{Selector, Swarm, TransferError, TransferOptions, TransferSummary},
};
use quicswarm_tests::{spawn_gateway, tree, within, TestGateway};

/// Downloads root `data` of `gw` over a swarm of one, kept open (its handler counts).
async fn download_data(gw: &TestGateway) -> (Swarm, Result<TransferSummary, TransferError>) {
    let swarm = within("swarm", Swarm::connect(&gw.controller(), &gw.addr, 1))
        .await
        .unwrap();
    let dest = tempfile::tempdir().unwrap();
    let options = TransferOptions::default();
    let result = within(
        "download",
        swarm.download("data", &Selector::all(), dest.path(), &options),
    )
    .await;
    (swarm, result)
}
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `GET path` on `addr`; the status line and the body.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    let mut socket = within("metrics connect", tokio::net::TcpStream::connect(addr))
        .await
        .unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut reply = Vec::new();
    within("metrics reply", socket.read_to_end(&mut reply))
        .await
        .unwrap();
    let reply = String::from_utf8(reply).unwrap();
    let (head, body) = reply.split_once("\r\n\r\n").expect("an HTTP reply");
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

/// The value of the series `name{labels}` (exactly as printed), or 0 if absent.
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn scraped_counters_move_with_the_work() {
    let dirs = tempfile::tempdir().unwrap();
    let (source, upload) = (dirs.path().join("source"), dirs.path().join("upload"));
    tree::write(&source);
    std::fs::create_dir_all(&upload).unwrap();
    let gw = spawn_gateway(move |b| {
        b.metrics("127.0.0.1:0".parse().unwrap())
            .serve("data", source)
            .upload_dir(upload)
    })
    .await;
    let addr = gw.gateway.metrics_addr().expect("metrics enabled");

    let (status, before) = http_get(addr, "/metrics").await;
    assert!(status.contains("200"), "{status}");
    assert_eq!(value(&before, "quicswarm_handlers"), 0.0);
    assert_eq!(value(&before, "quicswarm_pool_size"), 5.0);

    let client = gw.client().await;
    within("call", client.call("echo", "hi")).await.unwrap();
    within("call", client.call("echo", "again")).await.unwrap();
    let unknown = within("unknown", client.call("no_such_thing", "x")).await;
    assert!(unknown.is_err());
    let args = CounterArgs { count: 50, size: 8 };
    let mut items = within("stream", client.stream("counter", &args))
        .await
        .unwrap();
    while within("item", items.next()).await.unwrap().is_some() {}
    let (swarm, summary) = download_data(&gw).await;
    let summary = summary.unwrap();

    let (_, after) = http_get(addr, "/metrics").await;
    let ops = |kind: &str, result: &str| {
        value(
            &after,
            &format!("quicswarm_operations_total{{kind=\"{kind}\",result=\"{result}\"}}"),
        )
    };
    assert_eq!(ops("call", "ok"), 2.0, "{after}");
    assert_eq!(ops("call", "UnknownSubroutine"), 1.0, "{after}");
    assert_eq!(ops("stream", "ok"), 1.0, "{after}");
    assert!(ops("get", "ok") >= 1.0, "{after}");
    assert_eq!(
        value(
            &after,
            "quicswarm_stream_items_total{delivery=\"reliable\"}"
        ),
        50.0
    );
    assert_eq!(
        value(&after, "quicswarm_files_total{direction=\"sent\"}"),
        summary.files as f64
    );
    assert_eq!(
        value(&after, "quicswarm_file_bytes_total{direction=\"sent\"}"),
        summary.bytes as f64
    );
    // The test client and the swarm's one: two handlers, two live connections reported.
    assert_eq!(value(&after, "quicswarm_handlers"), 2.0, "{after}");
    assert!(value(&after, "quicswarm_handshakes_total{result=\"established\"}") >= 2.0);
    assert!(
        value(&after, "quicswarm_transport_bytes_total{direction=\"out\"}") > summary.bytes as f64
    );
    let rtts: Vec<&str> = after
        .lines()
        .filter(|l| l.starts_with("quicswarm_client_rtt_seconds{client=\"anonymous\""))
        .collect();
    assert_eq!(rtts.len(), 2, "{after}");
    assert!(after.contains("quicswarm_client_cwnd_bytes{client=\"anonymous\""));

    drop((client, swarm));

    // Any other path: 404.
    let (status, _) = http_get(addr, "/").await;
    assert!(status.contains("404"), "{status}");
}

#[tokio::test]
async fn limit_hits_are_counted_by_limit() {
    let dirs = tempfile::tempdir().unwrap();
    tree::write(dirs.path());
    let root = dirs.path().to_path_buf();
    let gw = spawn_gateway(move |b| {
        let mut limits = quicswarm::Limits::default();
        limits.max_request_items = 1;
        b.metrics("127.0.0.1:0".parse().unwrap())
            .serve("data", root)
            .limits(limits)
    })
    .await;
    // More files than one request may name: the gateway refuses with a typed error.
    let (_swarm, refused) = download_data(&gw).await;
    assert!(refused.is_err());
    let text = gw.gateway.metrics();
    assert!(
        value(
            &text,
            "quicswarm_limit_hits_total{limit=\"max_request_items\"}"
        ) >= 1.0,
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l == "quicswarm_operations_total{kind=\"get\",result=\"LimitExceeded\"} 1"),
        "{text}"
    );
}

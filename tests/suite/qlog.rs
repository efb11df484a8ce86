//! qlog files, one per connection, on both sides (feature `qlog`).

use std::{path::Path, time::Duration};

use crate::harness::spawn_gateway;
use quicswarm::{Controller, ControllerConfig, Trust};
use quicswarm_tests::within;

/// The one file in `dir` once quinn has written it out: a qlog header, then events. quinn
/// drops a connection's log (flushing it) a moment after the connection has drained, and
/// nothing signals that moment: this polls, bounded.
async fn qlog_of(dir: &Path, prefix: &str) -> String {
    for _ in 0..500 {
        let files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert!(files.len() <= 1, "one connection, one file: {files:?}");
        if let Some(file) = files.first() {
            let name = file.file_name().unwrap().to_string_lossy().to_string();
            assert!(
                name.starts_with(prefix) && name.ends_with(".sqlog"),
                "{name}"
            );
            let text = std::fs::read_to_string(file).unwrap();
            if text.contains("packet_received") {
                return text;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no qlog events written in {} within 10 s", dir.display());
}

#[tokio::test]
async fn each_side_writes_a_qlog_file_per_connection() {
    let logs = tempfile::tempdir().unwrap();
    let (gateway_dir, controller_dir) = (logs.path().join("gw"), logs.path().join("ctl"));
    let dir = gateway_dir.clone();
    let gw = spawn_gateway(move |b| b.qlog_dir(dir)).await;
    let mut config = ControllerConfig::with_trust(Trust::Fingerprints(vec![gw.fingerprint]));
    config.qlog_dir = Some(controller_dir.clone());
    config.bind = Some("127.0.0.1:0".parse().unwrap());
    let controller = Controller::new(config).unwrap();
    let client = within("connect", controller.get_client(&gw.addr))
        .await
        .unwrap();
    within("ping", client.ping()).await.unwrap();
    within("close", client.close()).await.unwrap();
    within("controller close", controller.close()).await;
    drop(controller);
    within(
        "gateway shutdown",
        gw.gateway.shutdown(Duration::from_secs(1)),
    )
    .await;

    for (dir, side) in [(&gateway_dir, "gateway-"), (&controller_dir, "controller-")] {
        let text = qlog_of(dir, side).await;
        // JSON text sequences (RFC 7464): each record starts with RS and ends with a newline;
        // the first is the header, the others events.
        let records: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l.trim_start_matches('\u{1e}')).unwrap())
            .collect();
        assert_eq!(
            records[0]["qlog_format"], "JSON-SEQ",
            "{side}: {}",
            records[0]
        );
        let events = &records[1..];
        assert!(
            events
                .iter()
                .any(|e| e["name"].as_str() == Some("transport:packet_sent")),
            "{side}: {text}"
        );
    }
}

#[tokio::test]
async fn connections_opened_together_get_a_file_each() {
    let logs = tempfile::tempdir().unwrap();
    let gw = spawn_gateway(|b| b).await;
    let mut config = ControllerConfig::with_trust(Trust::Fingerprints(vec![gw.fingerprint]));
    config.qlog_dir = Some(logs.path().to_path_buf());
    config.bind = Some("127.0.0.1:0".parse().unwrap());
    let controller = Controller::new(config).unwrap();
    // Three dials at once: same peer, same millisecond, likely.
    let dials = (0..3).map(|_| controller.get_client(&gw.addr));
    let clients = within("connect", futures_util::future::try_join_all(dials))
        .await
        .unwrap();
    assert_eq!(clients.len(), 3);
    assert_eq!(std::fs::read_dir(logs.path()).unwrap().count(), 3);
}

//! What the gateway's log lines say about where they come from.

use std::sync::{Arc, Mutex};

use crate::harness::spawn_gateway;
use quicswarm::{Allow, CallError, Permissions};
use quicswarm_tests::within;

/// A log sink the test reads back.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_warning_names_the_gateway_handler_client_and_request_kind() {
    let captured = Captured::default();
    let sink = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    // This test's runtime runs every task on this thread: the subscriber sees them all.
    let _guard = tracing::subscriber::set_default(subscriber);
    let mut narrow = Permissions::none();
    narrow.subroutines = Allow::only(["byte_sum"]);
    let gw = spawn_gateway(move |b| b.default_permissions(narrow)).await;
    let client = gw.client().await;
    let denied = within("call", client.call("echo", "hi")).await;
    assert!(matches!(denied, Err(CallError::PermissionDenied(_))));

    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("denied"))
        .unwrap_or_else(|| panic!("no warning about the denial in {text:?}"));
    let gateway = format!("gateway{{addr={}}}", gw.gateway.local_addr());
    for part in [
        gateway.as_str(),
        "handler{id=",
        "client=\"anonymous\"",
        "op{kind=\"call\"}",
    ] {
        assert!(line.contains(part), "{part:?} missing from {line:?}");
    }
}

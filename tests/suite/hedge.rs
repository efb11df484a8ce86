//! Hedged calls: sent again when the first sending is slow, for replay-safe subroutines only.

use std::{
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc,
    },
    time::Duration,
};

use crate::harness::spawn_gateway;
use quicswarm::CallError;
use quicswarm_tests::within;

/// Registers the replay-safe `stuck_once`: its first run never ends, later runs answer
/// `b"later"` at once. Returns the run count.
fn stuck_once(registry: &quicswarm::Registry) -> Arc<AtomicU32> {
    let runs = Arc::new(AtomicU32::new(0));
    let counted = runs.clone();
    registry.batch("stuck_once", move |_: ()| {
        let first = counted.fetch_add(1, Ordering::SeqCst) == 0;
        async move {
            if first {
                std::future::pending::<()>().await;
            }
            Ok::<_, String>(b"later".to_vec())
        }
    });
    assert!(registry.set_replay_safe("stuck_once", true));
    runs
}

#[tokio::test]
async fn a_stuck_first_sending_is_answered_by_the_second() {
    let gw = spawn_gateway(|b| b).await;
    let runs = stuck_once(gw.gateway.registry());
    let client = gw.client().await;
    let reply = within(
        "hedged call",
        client.call_hedged("stuck_once", &(), Duration::from_millis(20)),
    )
    .await
    .unwrap();
    assert_eq!(&reply[..], b"later");
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    // A plain call of the same subroutine would have waited for the first run.
    within("ping", client.ping()).await.unwrap();
}

#[tokio::test]
async fn an_answer_before_the_hedge_is_sent_once() {
    let gw = spawn_gateway(|b| b).await;
    let runs = Arc::new(AtomicU32::new(0));
    let counted = runs.clone();
    let registry = gw.gateway.registry();
    registry.batch("count", move |_: ()| {
        let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
        async move { Ok::<_, String>(n.to_le_bytes().to_vec()) }
    });
    assert!(registry.set_replay_safe("count", true));
    let client = gw.client().await;
    for expected in 1..=3u32 {
        // Far longer than a call on loopback takes: no second sending.
        let reply = within(
            "hedged call",
            client.call_hedged("count", &(), Duration::from_secs(3600)),
        )
        .await
        .unwrap();
        assert_eq!(&reply[..], expected.to_le_bytes());
    }
    assert_eq!(runs.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn only_replay_safe_subroutines_are_hedged() {
    let gw = spawn_gateway(|b| b).await;
    let runs = stuck_once(gw.gateway.registry());
    assert!(gw.gateway.registry().set_replay_safe("stuck_once", false));
    let client = gw.client().await;
    for name in ["stuck_once", "echo", "no_such_subroutine"] {
        match client
            .call_hedged(name, &(), Duration::from_millis(1))
            .await
        {
            Err(CallError::BadArgs(message)) => assert!(message.contains(name), "{message}"),
            other => panic!("{name}: expected BadArgs, got {other:?}"),
        }
    }
    // Refused before anything was sent.
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    within("ping", client.ping()).await.unwrap();
}

#[tokio::test]
async fn a_session_hedges_on_its_current_connection() {
    let gw = spawn_gateway(|b| b).await;
    let runs = stuck_once(gw.gateway.registry());
    let controller = gw.controller();
    let session = within(
        "session",
        quicswarm::Session::connect(&controller, &gw.addr, quicswarm::ReconnectPolicy::default()),
    )
    .await
    .unwrap();
    let reply = within(
        "hedged call",
        session.call_hedged("stuck_once", &(), Duration::from_millis(20)),
    )
    .await
    .unwrap();
    assert_eq!(&reply[..], b"later");
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    session.close().await;
}

//! Registration while running, close_gateway, graceful shutdown and the blocking facade.

use std::time::Duration;

use crate::harness::spawn_gateway;
use quicswarm::{blocking, demo::CounterArgs, CallError, ConnectError, Trust};
use quicswarm_tests::within;

#[tokio::test]
async fn subroutines_can_be_registered_while_running() {
    let gw = spawn_gateway(|b| b).await;
    let client = gw.client().await;
    assert!(matches!(
        client.call("late", &()).await,
        Err(CallError::UnknownSubroutine(_))
    ));
    gw.gateway
        .registry()
        .batch("late", |_: ()| async { Ok::<_, String>("arrived") });
    assert_eq!(
        &within("late call", client.call("late", &())).await.unwrap()[..],
        b"arrived"
    );
    assert!(gw.gateway.registry().remove("late"));
    assert!(matches!(
        client.call("late", &()).await,
        Err(CallError::UnknownSubroutine(_))
    ));
}

#[tokio::test]
async fn close_gateway_is_denied_by_default() {
    let gw = spawn_gateway(|b| b).await;
    let client = gw.client().await;
    match within("close_gateway", client.close_gateway()).await {
        Err(CallError::PermissionDenied(m)) => assert!(m.contains("close_gateway"), "{m}"),
        other => panic!("expected PermissionDenied, got {other:?}"),
    }
    within("still serving", client.ping()).await.unwrap();
}

#[tokio::test]
async fn close_gateway_when_allowed_shuts_down() {
    let gw = spawn_gateway(|b| b.allow_close(true)).await;
    let controller = gw.controller();
    let client = within("connect", controller.get_client(&gw.addr))
        .await
        .unwrap();
    within("close_gateway", client.close_gateway())
        .await
        .unwrap();
    within("gateway closed", gw.gateway.closed()).await;
    let err = within(
        "connect after close",
        gw.impatient_controller().get_client(&gw.addr),
    )
    .await;
    assert!(err.is_err(), "a closed gateway must not accept clients");
}

#[tokio::test]
async fn graceful_shutdown_lets_in_flight_work_finish() {
    let gw = spawn_gateway(|b| b).await;
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    let started_tx = std::sync::Mutex::new(Some(started_tx));
    gw.gateway.registry().batch("slow", move |ms: u64| {
        if let Some(tx) = started_tx.lock().unwrap().take() {
            let _ = tx.send(());
        }
        async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, String>("finished")
        }
    });
    let controller = gw.impatient_controller();
    let client = within("connect", controller.get_client(&gw.addr))
        .await
        .unwrap();
    let call = tokio::spawn({
        let client = client.clone();
        async move { client.call("slow", &300u64).await }
    });
    within("slow call started", started_rx).await.unwrap();
    let addr = gw.addr.clone();
    within("shutdown", gw.gateway.shutdown(Duration::from_secs(10))).await;
    assert_eq!(
        &within("slow call", call).await.unwrap().unwrap()[..],
        b"finished"
    );
    assert!(controller.get_client(&addr).await.is_err());
}

/// A reply the gateway finished before its shutdown began, but which the link has not
/// delivered yet, is still delivered: the close waits for its acknowledgement (the link
/// is cut as the reply leaves, and restored once the gateway has retransmitted it).
/// Always over QUIC: about QUIC's acknowledgements.
#[tokio::test]
async fn shutdown_waits_for_replies_not_yet_acknowledged() {
    let link = quicswarm_tests::link::Link::new(9);
    let wrapper = link.wrapper();
    let gw = quicswarm_tests::spawn_gateway_on(quicswarm::TransportKind::Quic, move |b| {
        b.socket_wrapper(wrapper)
    })
    .await;
    let (replying_tx, replying_rx) = tokio::sync::oneshot::channel::<()>();
    let replying_tx = std::sync::Mutex::new(Some(replying_tx));
    let cut = link.clone();
    gw.gateway.registry().batch("last_word", move |()| {
        // The link goes down as the answer leaves: it is finished, and unacknowledged.
        cut.set_down(true);
        if let Some(tx) = replying_tx.lock().unwrap().take() {
            let _ = tx.send(());
        }
        async { Ok::<_, String>("kept") }
    });
    let client = gw.client().await;
    let call = tokio::spawn({
        let client = client.clone();
        async move { client.call("last_word", &()).await }
    });
    within("subroutine ran", replying_rx).await.unwrap();
    // Two datagrams lost after the cut: the reply and a retransmission of it (or, were the
    // close not waiting, the reply and the close itself).
    let restore = async {
        within("two datagrams dropped", link.dropped_at_least(2)).await;
        link.set_down(false);
    };
    tokio::join!(
        within("shutdown", gw.gateway.shutdown(Duration::from_secs(20))),
        restore
    );
    assert_eq!(
        &within("the reply", call).await.unwrap().unwrap()[..],
        b"kept"
    );
}

#[test]
fn blocking_facade_runs_every_operation() {
    let gateway = blocking::Gateway::spawn(
        quicswarm::Gateway::builder()
            .listen("127.0.0.1:0".parse().unwrap())
            .identity(quicswarm::Identity::self_signed(&[]).unwrap())
            .registry(quicswarm::demo::registry())
            .allow_close(true),
    )
    .unwrap();
    let inner = gateway.as_async().unwrap();
    let addr = inner.local_addr().to_string();
    let mut config =
        quicswarm::ControllerConfig::with_trust(Trust::Fingerprints(vec![inner.fingerprint()]));
    config.call_timeout = Some(Duration::from_secs(30));
    config.connect_timeout = Duration::from_secs(1);
    let controller = blocking::Controller::new(config).unwrap();
    let client = controller.get_client(&addr).unwrap();
    assert!(client.ping().unwrap() > Duration::ZERO);
    assert_eq!(&client.call("echo", "blocking").unwrap()[..], b"blocking");
    let idents: Vec<i64> = client
        .stream("counter", &CounterArgs { count: 5, size: 3 })
        .unwrap()
        .map(|item| item.unwrap().0)
        .collect();
    assert_eq!(idents, vec![0, 1, 2, 3, 4]);
    let mut ended = false;
    let outcome = client
        .stream_with(
            "counter",
            &CounterArgs { count: 5, size: 3 },
            |_, _| true,
            || ended = true,
        )
        .unwrap();
    assert!(outcome.completed && ended);
    assert_eq!(client.send("byte_sum", &(), vec![2u8; 10]).unwrap(), 20);
    client.close_gateway().unwrap();
    gateway.run(); // returns once closed
    assert!(matches!(
        controller.get_client(&addr),
        Err(ConnectError::Connection { .. }
            | ConnectError::Timeout { .. }
            | ConnectError::Refused { .. })
    ));
}

/// A client whose local address changes keeps its connection (QUIC migration).
#[tokio::test]
async fn a_rebound_client_keeps_its_connection() {
    let gw = spawn_gateway(|b| b.pool_size(1)).await;
    let controller = gw.controller();
    let client = within("connect", controller.get_client(&gw.addr))
        .await
        .unwrap();
    let mut ticks = client
        .stream(
            "ticker",
            &quicswarm::Json(r#"{"count": 40, "interval_ms": 5}"#),
        )
        .await
        .unwrap();
    within("tick", ticks.next()).await.unwrap().unwrap();
    let before = controller.local_addr().unwrap();
    controller.rebind("127.0.0.1:0".parse().unwrap()).unwrap();
    let after = controller.local_addr().unwrap();
    assert_ne!(before.port(), after.port(), "a new socket");
    within("ping after rebind", client.ping()).await.unwrap();
    let mut n = 1;
    while within("tick", ticks.next()).await.unwrap().is_some() {
        n += 1;
    }
    assert_eq!(n, 40, "the subscription survived the move");
    assert_eq!(gw.gateway.handlers(), 1, "still the same handler");
    assert_eq!(
        client.connection().remote_address(),
        gw.gateway.local_addr()
    );
}

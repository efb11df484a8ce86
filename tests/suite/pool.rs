//! The handler pool: overflow, slot reuse, dropped and vanished clients.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use crate::harness::spawn_gateway;
use bytes::Bytes;
use futures_util::stream;
use quicswarm::{ConnectError, TransportKind};
use quicswarm_tests::within;
use tokio::sync::oneshot;

#[tokio::test]
async fn full_pool_is_a_typed_error_and_close_frees_the_slot() {
    let gw = spawn_gateway(|b| b.pool_size(2)).await;
    let controller = gw.controller();
    let a = within("a", controller.get_client(&gw.addr)).await.unwrap();
    let b = within("b", controller.get_client(&gw.addr)).await.unwrap();
    assert_eq!(gw.gateway.handlers(), 2);
    match within("c", controller.get_client(&gw.addr)).await {
        Err(ConnectError::PoolFull { size, .. }) => assert_eq!(size, 2),
        other => panic!("expected PoolFull, got {other:?}"),
    }
    // A refused client takes no slot; the others keep working.
    within("ping a", a.ping()).await.unwrap();
    within("close b", b.close()).await.unwrap();
    let c = within("c again", controller.get_client(&gw.addr))
        .await
        .unwrap();
    within("ping c", c.ping()).await.unwrap();
    let err = within("d", controller.get_client(&gw.addr))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("pool full"), "{err}");
}

/// A stream producer that counts what it yields and reports when it is dropped.
fn tracked_ticker(
    registry: &quicswarm::Registry,
    produced: Arc<AtomicU64>,
    dropped: oneshot::Sender<()>,
) {
    struct OnDrop(Option<oneshot::Sender<()>>);
    impl Drop for OnDrop {
        fn drop(&mut self) {
            if let Some(tx) = self.0.take() {
                let _ = tx.send(());
            }
        }
    }
    let dropped = std::sync::Mutex::new(Some(dropped));
    registry.stream("tracked", move |interval_ms: u64, _ctx| {
        let guard = OnDrop(dropped.lock().unwrap().take());
        let produced = produced.clone();
        stream::unfold((0i64, guard), move |(i, guard)| {
            let produced = produced.clone();
            async move {
                if i > 0 {
                    tokio::time::sleep(Duration::from_millis(interval_ms)).await;
                }
                produced.fetch_add(1, Ordering::SeqCst);
                Some((
                    Ok::<_, String>((i, Bytes::from_static(b"tick"))),
                    (i + 1, guard),
                ))
            }
        })
    });
}

#[tokio::test]
async fn dropped_client_frees_its_slot_and_stops_its_producer() {
    let gw = spawn_gateway(|b| b.pool_size(1)).await;
    let produced = Arc::new(AtomicU64::new(0));
    let (dropped_tx, dropped_rx) = oneshot::channel();
    tracked_ticker(gw.gateway.registry(), produced.clone(), dropped_tx);
    let controller = gw.controller();
    let client = within("connect", controller.get_client(&gw.addr))
        .await
        .unwrap();
    let mut stream = within("subscribe", client.stream("tracked", &5u64))
        .await
        .unwrap();
    for _ in 0..3 {
        within("item", stream.next()).await.unwrap().unwrap();
    }
    drop(stream);
    drop(client);
    within("producer dropped", dropped_rx).await.unwrap();
    gw.wait_handlers_at_most(0).await;
    let again = within("reconnect", controller.get_client(&gw.addr))
        .await
        .unwrap();
    within("ping", again.ping()).await.unwrap();
}

#[tokio::test]
async fn abort_stops_the_producer_within_one_item() {
    let gw = spawn_gateway(|b| b).await;
    let produced = Arc::new(AtomicU64::new(0));
    let (dropped_tx, dropped_rx) = oneshot::channel();
    tracked_ticker(gw.gateway.registry(), produced.clone(), dropped_tx);
    let client = gw.client().await;
    let mut stream = within("subscribe", client.stream("tracked", &20u64))
        .await
        .unwrap();
    let mut received = 0;
    for _ in 0..5 {
        within("item", stream.next()).await.unwrap().unwrap();
        received += 1;
    }
    stream.abort();
    within("producer dropped", dropped_rx).await.unwrap();
    let made = produced.load(Ordering::SeqCst);
    assert!(
        made <= received + 1,
        "producer made {made} items for {received} received"
    );
    // The connection and the gateway are fine.
    within("ping", client.ping()).await.unwrap();
}

#[tokio::test]
async fn blocking_producer_sees_the_abort() {
    let gw = spawn_gateway(|b| b).await;
    let produced = Arc::new(AtomicU64::new(0));
    let (done_tx, done_rx) = std::sync::mpsc::channel::<u64>();
    let count = produced.clone();
    let done_tx = std::sync::Mutex::new(done_tx);
    gw.gateway
        .registry()
        .stream_blocking("blocking_ticker", move |interval_ms: u64, em| {
            let mut i = 0;
            let result = loop {
                if i > 0 {
                    std::thread::sleep(Duration::from_millis(interval_ms));
                }
                if em.emit(i, vec![1u8; 8]).is_err() {
                    break Ok::<_, String>(());
                }
                count.fetch_add(1, Ordering::SeqCst);
                i += 1;
            };
            let _ = done_tx.lock().unwrap().send(i as u64);
            result
        });
    let client = gw.client().await;
    let mut stream = within("subscribe", client.stream("blocking_ticker", &20u64))
        .await
        .unwrap();
    for _ in 0..4 {
        within("item", stream.next()).await.unwrap().unwrap();
    }
    drop(stream);
    let emitted = within(
        "producer returns",
        tokio::task::spawn_blocking(move || done_rx.recv_timeout(Duration::from_secs(20))),
    )
    .await
    .unwrap()
    .expect("the blocking producer returned after the abort");
    assert!(
        emitted <= 5,
        "producer emitted {emitted} items for 4 received"
    );
}

/// A client whose process vanishes sends no close: the gateway frees its slot after the idle
/// timeout.
#[tokio::test]
async fn vanished_client_frees_its_slot_after_the_idle_timeout() {
    let gw = spawn_gateway(|b| {
        let mut transport = quicswarm::TransportTuning::default();
        transport.idle_timeout = Duration::from_secs(1);
        b.pool_size(1).transport(transport)
    })
    .await;
    let addr = gw.addr.clone();
    let fingerprint = gw.fingerprint;
    // The client lives on its own runtime, shut down without running any close.
    let (connected_tx, connected_rx) = oneshot::channel();
    let (vanish_tx, vanish_rx) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = rt.block_on(async {
            let c = quicswarm_tests::controller(quicswarm::Trust::Fingerprints(vec![fingerprint]));
            let client = c.get_client(&addr).await.unwrap();
            client.ping().await.unwrap();
            (c, client)
        });
        let _ = connected_tx.send(());
        let _ = vanish_rx.recv();
        // Leak the handles so no close is queued, then stop the runtime: no more packets.
        std::mem::forget(client);
        rt.shutdown_background();
    });
    within("client connected", connected_rx).await.unwrap();
    assert_eq!(gw.gateway.handlers(), 1);
    assert!(matches!(
        gw.controller().get_client(&gw.addr).await,
        Err(ConnectError::PoolFull { .. })
    ));
    vanish_tx.send(()).unwrap();
    thread.join().unwrap();
    gw.wait_handlers_at_most(0).await;
    let again = within("reconnect", gw.controller().get_client(&gw.addr))
        .await
        .unwrap();
    within("ping", again.ping()).await.unwrap();
}

/// An idle client keeps its handler even when the gateway's idle timeout is shorter than the
/// client's keep-alive interval: the gateway pings too.
#[tokio::test]
async fn idle_client_outlives_a_short_gateway_idle_timeout() {
    let gw = spawn_gateway(|b| {
        let mut transport = quicswarm::TransportTuning::default();
        transport.idle_timeout = Duration::from_millis(600);
        b.transport(transport)
    })
    .await;
    let mut config = quicswarm::ControllerConfig::with_trust(quicswarm::Trust::Fingerprints(vec![
        gw.fingerprint,
    ]));
    config.transport.keep_alive = Duration::from_secs(30);
    let controller = quicswarm::Controller::new(config).unwrap();
    let client = within("connect", controller.get_client(&gw.addr))
        .await
        .unwrap();
    // Idle for four idle timeouts: the subject of this test, not a synchronisation.
    tokio::time::sleep(Duration::from_millis(2400)).await;
    within("ping after idling", client.ping()).await.unwrap();
    assert_eq!(gw.gateway.handlers(), 1);
}

#[tokio::test]
async fn one_address_cannot_take_every_connection() {
    let gw = spawn_gateway(|b| {
        let mut limits = quicswarm::Limits::default();
        limits.max_connections_per_ip = 2;
        b.pool_size(10).limits(limits)
    })
    .await;
    let controller = gw.controller();
    let a = within("a", controller.get_client(&gw.addr)).await.unwrap();
    let _b = within("b", controller.get_client(&gw.addr)).await.unwrap();
    match within("c", gw.impatient_controller().get_client(&gw.addr)).await {
        Err(ConnectError::Connection { source, .. }) => {
            assert!(
                source.to_string().to_lowercase().contains("refused"),
                "{source}"
            )
        }
        // TCP: the gateway closes the socket before the TLS handshake.
        Err(ConnectError::Tcp { .. }) if crate::harness::TRANSPORT == TransportKind::Tcp => {}
        other => panic!("expected a refused connection, got {other:?}"),
    }
    within("close a", a.close()).await.unwrap();
    let mut live = gw.gateway.watch_connections();
    within("a's connection gone", live.wait_for(|&n| n <= 1))
        .await
        .unwrap();
    let again = within("after a left", controller.get_client(&gw.addr))
        .await
        .unwrap();
    within("ping", again.ping()).await.unwrap();
}

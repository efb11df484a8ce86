//! One gateway, both transports: QUIC and TLS-over-TCP clients side by side, sharing one
//! handler pool; QUIC-only features asked over TCP are typed `Unsupported` errors.

use quicswarm::{
    demo::CounterArgs, CallError, ConnectError, Delivery, SubscribeOptions, TransportKind,
};
use quicswarm_tests::{spawn_gateway, spawn_gateway_on, within};

#[tokio::test]
async fn quic_and_tcp_clients_share_one_gateway_and_its_pool() {
    let gw = spawn_gateway_on(TransportKind::Tcp, |b| b.pool_size(2)).await;
    let tcp_addr = gw.addr.clone();
    let quic_addr = gw.gateway.local_addr().to_string();
    assert_eq!(
        gw.gateway.tcp_addr().map(|a| a.port()),
        Some(gw.gateway.local_addr().port())
    );
    let controller = gw.controller();

    let over_tcp = within("tcp", controller.get_client(&tcp_addr))
        .await
        .unwrap();
    let over_quic = within("quic", controller.get_client(&quic_addr))
        .await
        .unwrap();
    assert_eq!(over_tcp.transport(), TransportKind::Tcp);
    assert_eq!(over_quic.transport(), TransportKind::Quic);
    assert!(over_tcp.connection().quic().is_none());
    assert!(over_quic.connection().quic().is_some());

    // The same operations, the same answers.
    for client in [&over_tcp, &over_quic] {
        assert_eq!(
            &within("call", client.call("echo", "hi")).await.unwrap()[..],
            b"hi"
        );
        let mut s = client
            .stream(
                "counter",
                &CounterArgs {
                    count: 50,
                    size: 100,
                },
            )
            .await
            .unwrap();
        let mut n = 0;
        while within("item", s.next()).await.unwrap().is_some() {
            n += 1;
        }
        assert_eq!(n, 50);
    }

    // One pool for both transports: a third client is refused whichever it uses.
    for addr in [&tcp_addr, &quic_addr] {
        match within("third", controller.get_client(addr)).await {
            Err(ConnectError::PoolFull { size, .. }) => assert_eq!(size, 2),
            other => panic!("expected PoolFull on {addr}, got {other:?}"),
        }
    }
    // Closing the TCP client frees its slot for anyone.
    within("close", over_tcp.close()).await.unwrap();
    gw.wait_handlers_at_most(1).await;
    let again = within("again", controller.get_client(&quic_addr))
        .await
        .unwrap();
    within("ping", again.ping()).await.unwrap();
}

#[tokio::test]
async fn quic_only_features_are_unsupported_over_tcp() {
    let gw = spawn_gateway_on(TransportKind::Tcp, |b| b).await;
    let controller = gw.controller();
    match within("0-RTT", controller.get_client_0rtt(&gw.addr)).await {
        Err(ConnectError::Unsupported { feature, transport }) => {
            assert_eq!((feature, transport), ("0-RTT", TransportKind::Tcp));
        }
        other => panic!("expected Unsupported, got {other:?}"),
    }
    let client = gw.client().await;
    let args = CounterArgs { count: 3, size: 10 };
    for delivery in [
        Delivery::Latest,
        Delivery::Datagram,
        Delivery::Unordered,
        Delivery::Redundant,
        Delivery::Fec,
    ] {
        let options = SubscribeOptions::delivery(delivery);
        match within("subscribe", client.subscribe("counter", &args, &options)).await {
            Err(CallError::Unsupported(m)) => assert!(m.contains("QUIC"), "{m}"),
            other => panic!("expected Unsupported for {delivery:?}, got {other:?}"),
        }
    }
    // Reliable delivery, with a priority (ignored over TCP), works.
    let mut options = SubscribeOptions::delivery(Delivery::Reliable);
    options.priority = 5;
    let mut s = within("reliable", client.subscribe("counter", &args, &options))
        .await
        .unwrap();
    let mut n = 0;
    while within("item", s.next()).await.unwrap().is_some() {
        n += 1;
    }
    assert_eq!(n, 3);
    // Byte counts are kept over TCP.
    let stats = client.stats();
    assert!(
        stats.bytes_sent > 0 && stats.bytes_received > 0,
        "{stats:?}"
    );
}

/// Handshakes in progress are bounded: sockets that never start TLS hold the gateway's
/// handshake slots, so a further client is refused at once; when they go, it gets in.
#[tokio::test]
async fn pending_handshakes_are_bounded() {
    let gw = spawn_gateway_on(TransportKind::Tcp, |b| {
        let mut limits = quicswarm::Limits::default();
        limits.max_pending_handshakes = 2;
        b.limits(limits)
    })
    .await;
    let tcp = gw.gateway.tcp_addr().unwrap();
    let mut connections = gw.gateway.watch_connections();
    let silent: Vec<tokio::net::TcpStream> = vec![
        within("silent 1", tokio::net::TcpStream::connect(tcp))
            .await
            .unwrap(),
        within("silent 2", tokio::net::TcpStream::connect(tcp))
            .await
            .unwrap(),
    ];
    within("both accepted", connections.wait_for(|&n| n == 2))
        .await
        .unwrap();
    assert_eq!(gw.gateway.stats().pending_handshakes, 2);
    match within("third", gw.impatient_controller().get_client(&gw.addr)).await {
        Err(ConnectError::Tcp { .. }) => {}
        other => panic!("expected a refused connection, got {other:?}"),
    }
    drop(silent);
    within("slots freed", connections.wait_for(|&n| n == 0))
        .await
        .unwrap();
    let client = gw.client().await;
    within("ping", client.ping()).await.unwrap();
    assert_eq!(gw.gateway.stats().pending_handshakes, 0);
}

/// Past its threshold of handshakes in progress, a gateway answers a new QUIC attempt with a
/// Retry: a real client echoes the token and gets in; each attempt is counted.
#[tokio::test]
async fn busy_gateways_validate_addresses_with_retry() {
    let gw = spawn_gateway(|b| {
        let mut limits = quicswarm::Limits::default();
        limits.retry_above_handshakes = 0;
        b.limits(limits)
    })
    .await;
    for n in 1..=2 {
        let client = gw.client().await;
        within("ping", client.ping()).await.unwrap();
        assert_eq!(gw.gateway.stats().retries, n, "one Retry per connection");
    }
    // Below the threshold nobody is asked to retry.
    let calm = spawn_gateway(|b| b).await;
    let client = calm.client().await;
    within("ping", client.ping()).await.unwrap();
    assert_eq!(calm.gateway.stats().retries, 0);
}

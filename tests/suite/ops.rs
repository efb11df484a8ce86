//! Each operation, and many at once.

use std::time::Duration;

use crate::harness::spawn_gateway;
use bytes::Bytes;
use quicswarm::{
    demo::{counter_byte, CounterArgs},
    Json,
};
use quicswarm_tests::within;

#[tokio::test]
async fn ping_measures_a_round_trip() {
    let gw = spawn_gateway(|b| b).await;
    let client = gw.client().await;
    let rtt = within("ping", client.ping()).await.unwrap();
    assert!(
        rtt > Duration::ZERO && rtt < Duration::from_secs(5),
        "rtt {rtt:?}"
    );
    assert_eq!(client.pool(), (1, 5));
    let names: Vec<_> = client
        .subroutines()
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert!(
        names.contains(&"echo") && names.contains(&"counter"),
        "{names:?}"
    );
}

#[tokio::test]
async fn call_with_postcard_and_json_args() {
    let gw = spawn_gateway(|b| b).await;
    let client = gw.client().await;
    let reply = within("call", client.call("echo", "hello gateway"))
        .await
        .unwrap();
    assert_eq!(&reply[..], b"hello gateway");
    let reply = within("json call", client.call("echo", &Json(r#""from json""#)))
        .await
        .unwrap();
    assert_eq!(&reply[..], b"from json");
    // A large result crosses many packets.
    let big = "x".repeat(3 << 20);
    let reply = within("big call", client.call("echo", big.as_str()))
        .await
        .unwrap();
    assert_eq!(reply.len(), big.len());
}

#[tokio::test]
async fn stream_delivers_every_item_in_order() {
    let gw = spawn_gateway(|b| b).await;
    let client = gw.client().await;
    let args = CounterArgs {
        count: 2_000,
        size: 300,
    };
    let mut stream = within("subscribe", client.stream("counter", &args))
        .await
        .unwrap();
    let mut expected = 0i64;
    while let Some((ident, data)) = within("item", stream.next()).await.unwrap() {
        assert_eq!(ident, expected);
        assert_eq!(data.len(), 300);
        assert!(data.iter().enumerate().all(|(i, &b)| b == counter_byte(i)));
        expected += 1;
    }
    assert_eq!(expected, 2_000);
    assert!(stream.is_complete());
    // JSON args reach the same typed subroutine.
    let mut stream = client
        .stream("counter", &Json(r#"{"count": 3, "size": 1}"#))
        .await
        .unwrap();
    let mut n = 0;
    while within("item", stream.next()).await.unwrap().is_some() {
        n += 1;
    }
    assert_eq!(n, 3);
}

#[tokio::test]
async fn stream_resumes_after_an_ident() {
    let gw = spawn_gateway(|b| b).await;
    let client = gw.client().await;
    let args = CounterArgs { count: 10, size: 1 };
    let mut stream = client.stream_from("counter", &args, Some(6)).await.unwrap();
    let mut idents = Vec::new();
    while let Some((ident, _)) = within("item", stream.next()).await.unwrap() {
        idents.push(ident);
    }
    assert_eq!(idents, vec![7, 8, 9]);
}

#[tokio::test]
async fn stream_callbacks_end_and_abort() {
    let gw = spawn_gateway(|b| b).await;
    let client = gw.client().await;
    let args = CounterArgs { count: 50, size: 4 };
    let mut ended = false;
    let mut seen = 0;
    let outcome = within(
        "natural end",
        client.stream_with(
            "counter",
            &args,
            |_, _| {
                seen += 1;
                true
            },
            || ended = true,
        ),
    )
    .await
    .unwrap();
    assert!(ended && outcome.completed);
    assert_eq!((outcome.items, seen), (50, 50));

    let mut ended = false;
    let outcome = within(
        "abort",
        client.stream_with(
            "counter",
            &CounterArgs {
                count: 1_000_000,
                size: 4,
            },
            |ident, _| ident < 9,
            || ended = true,
        ),
    )
    .await
    .unwrap();
    assert!(
        !ended && !outcome.completed,
        "end callback must not run on abort"
    );
    assert_eq!(outcome.items, 10);
    // The client is still usable.
    within("ping after abort", client.ping()).await.unwrap();
}

#[tokio::test]
async fn send_sums_a_buffer_and_a_file() {
    let gw = spawn_gateway(|b| b).await;
    let client = gw.client().await;
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 256) as u8).collect();
    let want: i64 = data.iter().map(|&b| i64::from(b)).sum();
    assert_eq!(
        within("send", client.send("byte_sum", &(), data.clone()))
            .await
            .unwrap(),
        want
    );
    assert_eq!(
        within("send empty", client.send("byte_sum", &(), Bytes::new()))
            .await
            .unwrap(),
        0
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("input.bin");
    std::fs::write(&path, &data).unwrap();
    let file = tokio::fs::File::open(&path).await.unwrap();
    let sum = within(
        "send file",
        client.send_reader("byte_sum", &(), file, Some(data.len() as u64)),
    )
    .await
    .unwrap();
    assert_eq!(sum, want);
}

#[tokio::test]
async fn many_concurrent_operations_on_one_client_and_across_clients() {
    let gw = spawn_gateway(|b| b).await;
    let controller = gw.controller();
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(
            within("connect", controller.get_client(&gw.addr))
                .await
                .unwrap(),
        );
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (c, client) in clients.iter().enumerate() {
        for i in 0..64 {
            let client = client.clone();
            tasks.spawn(async move {
                match i % 4 {
                    0 => {
                        let text = format!("client {c} call {i}");
                        let reply = client.call("echo", text.as_str()).await?;
                        assert_eq!(reply, text.as_bytes());
                    }
                    1 => {
                        let mut s = client
                            .stream(
                                "counter",
                                &CounterArgs {
                                    count: 100,
                                    size: 64,
                                },
                            )
                            .await?;
                        let mut n = 0;
                        while s.next().await?.is_some() {
                            n += 1;
                        }
                        assert_eq!(n, 100);
                    }
                    2 => assert_eq!(
                        client.send("byte_sum", &(), vec![1u8; 1000 + i]).await?,
                        1000 + i as i64
                    ),
                    _ => {
                        client.ping().await?;
                    }
                }
                Ok::<_, quicswarm::CallError>(())
            });
        }
    }
    let mut done = 0;
    while let Some(result) = within("concurrent ops", tasks.join_next()).await {
        result.unwrap().unwrap();
        done += 1;
    }
    assert_eq!(done, 3 * 64);
}

/// A ping issued during a 256 MiB stream on the same client is answered while the stream is
/// still running: QUIC streams do not block each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_is_not_blocked_by_a_big_stream() {
    let gw = spawn_gateway(|b| b).await;
    let client = gw.client().await;
    const ITEMS: u64 = 4096;
    let args = CounterArgs {
        count: ITEMS,
        size: 64 * 1024,
    };
    let mut stream = within("subscribe", client.stream("counter", &args))
        .await
        .unwrap();
    let (first_tx, first_rx) = tokio::sync::oneshot::channel();
    let received = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = received.clone();
    let reader = tokio::spawn(async move {
        let mut first_tx = Some(first_tx);
        let mut bytes = 0u64;
        while let Some((_, data)) = stream.next().await? {
            bytes += data.len() as u64;
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if let Some(tx) = first_tx.take() {
                let _ = tx.send(());
            }
        }
        Ok::<_, quicswarm::CallError>(bytes)
    });
    within("first item", first_rx).await.unwrap();
    let rtt = within("ping during stream", client.ping()).await.unwrap();
    let at_ping = received.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        at_ping < ITEMS,
        "the ping waited for the whole stream ({at_ping} items)"
    );
    let bytes = within("stream end", reader).await.unwrap().unwrap();
    assert_eq!(bytes, ITEMS * 64 * 1024);
    eprintln!("ping during 256 MiB stream: {rtt:?} after {at_ping} of {ITEMS} items");
}

#[tokio::test]
async fn negative_ident_ends_a_stream_and_unit_sink_returns_zero() {
    let gw = spawn_gateway(|b| b).await;
    gw.gateway
        .registry()
        .stream("until_negative", |_: (), _| {
            futures_util::stream::iter(
                [0i64, 1, -1, 2]
                    .into_iter()
                    .map(|i| Ok::<_, String>((i, vec![i as u8]))),
            )
        })
        .sink("discard", |_: (), data: quicswarm::SinkData| async move {
            data.collect().await.map(drop).map_err(|e| e.to_string())
        });
    let client = gw.client().await;
    let mut s = client.stream("until_negative", &()).await.unwrap();
    let mut idents = Vec::new();
    while let Some((ident, _)) = within("item", s.next()).await.unwrap() {
        idents.push(ident);
    }
    assert_eq!(
        idents,
        vec![0, 1],
        "the negative ident ends the stream and is not sent"
    );
    assert!(s.is_complete());
    let value = within("unit sink", client.send("discard", &(), vec![9u8; 5000]))
        .await
        .unwrap();
    assert_eq!(value, 0);
}

#[tokio::test]
async fn one_controller_reaches_several_gateways() {
    let a = spawn_gateway(|b| b).await;
    let b = spawn_gateway(|b| b).await;
    let controller = quicswarm_tests::controller(quicswarm::Trust::Fingerprints(vec![
        a.fingerprint,
        b.fingerprint,
    ]));
    let ca = within("a", controller.get_client(&a.addr)).await.unwrap();
    let cb = within("b", controller.get_client(&b.addr)).await.unwrap();
    assert_ne!(ca.gateway(), cb.gateway());
    assert_eq!(
        &within("call a", ca.call("echo", "a")).await.unwrap()[..],
        b"a"
    );
    assert_eq!(
        &within("call b", cb.call("echo", "b")).await.unwrap()[..],
        b"b"
    );
    assert_eq!(a.gateway.handlers(), 1);
    assert_eq!(b.gateway.handlers(), 1);
}

#[tokio::test]
async fn statistics_follow_the_traffic() {
    let gw = spawn_gateway(|b| b).await;
    let client = gw.client().await;
    let quic = crate::harness::TRANSPORT == quicswarm::TransportKind::Quic;
    assert_eq!(client.transport(), crate::harness::TRANSPORT);
    let before = client.stats();
    if quic {
        assert!(before.cwnd > 0 && before.mtu >= 1200, "{before:?}");
    }
    within("send", client.send("byte_sum", &(), vec![1u8; 2_000_000]))
        .await
        .unwrap();
    let mut s = client
        .stream(
            "counter",
            &CounterArgs {
                count: 100,
                size: 10_000,
            },
        )
        .await
        .unwrap();
    while within("item", s.next()).await.unwrap().is_some() {}
    let after = client.stats();
    assert!(
        after.bytes_sent >= before.bytes_sent + 2_000_000,
        "{before:?} -> {after:?}"
    );
    assert!(
        after.bytes_received >= before.bytes_received + 1_000_000,
        "{before:?} -> {after:?}"
    );
    if quic {
        assert!(after.sent_packets > before.sent_packets);
        assert!(after.rtt > Duration::ZERO && after.rtt < Duration::from_secs(1));
    } else {
        // Over TCP only the socket's byte counts are kept.
        assert_eq!((after.sent_packets, after.cwnd), (0, 0), "{after:?}");
    }
}

/// Every preset and congestion controller carries real traffic.
#[tokio::test]
async fn presets_and_congestion_controllers_work() {
    use quicswarm::{Congestion, LinkPreset, TransportTuning};
    for (preset, congestion) in [
        (LinkPreset::Lan, Congestion::Cubic),
        (LinkPreset::Wifi, Congestion::NewReno),
        (LinkPreset::Cellular, Congestion::BbrExperimental),
    ] {
        let mut tuning = TransportTuning::preset(preset);
        tuning.congestion = congestion;
        let t = tuning.clone();
        let gw = spawn_gateway(move |b| b.transport(t)).await;
        let mut config =
            quicswarm::ControllerConfig::with_trust(quicswarm::Trust::Fingerprints(vec![
                gw.fingerprint,
            ]));
        config.transport = tuning;
        let controller = quicswarm::Controller::new(config).unwrap();
        let client = within("connect", controller.get_client(&gw.addr))
            .await
            .unwrap();
        let mut s = client
            .stream(
                "counter",
                &CounterArgs {
                    count: 200,
                    size: 50_000,
                },
            )
            .await
            .unwrap();
        let mut n = 0;
        while within("item", s.next()).await.unwrap().is_some() {
            n += 1;
        }
        assert_eq!(n, 200, "{preset:?} {congestion:?}");
    }
}

/// A sink that returns without reading its buffer still answers: the unread rest is dropped.
#[tokio::test]
async fn a_sink_may_ignore_its_buffer() {
    let gw = spawn_gateway(|b| b).await;
    gw.gateway
        .registry()
        .sink("ignore", |_: (), _data: quicswarm::SinkData| async {
            Ok::<_, String>(7i64)
        });
    let client = gw.client().await;
    for size in [0usize, 10, 5_000_000] {
        assert_eq!(
            within("send", client.send("ignore", &(), vec![1u8; size]))
                .await
                .unwrap(),
            7,
            "{size} bytes"
        );
    }
}

/// `ItemStream::next` is cancel-safe: polled under a timeout that keeps expiring while large
/// items arrive in many packets, it still yields every item whole and in order.
#[tokio::test]
async fn an_item_stream_loses_nothing_when_next_is_cancelled() {
    let gw = spawn_gateway(|b| b).await;
    let client = gw.client().await;
    let args = CounterArgs {
        count: 8,
        size: 300_000,
    };
    let mut items = within("stream", client.stream("counter", &args))
        .await
        .unwrap();
    let (mut got, mut cancelled) = (Vec::new(), 0u32);
    // Bounded: 8 items, each given at most 100,000 short tries.
    for _ in 0..800_000 {
        match tokio::time::timeout(Duration::from_micros(50), items.next()).await {
            Err(_) => cancelled += 1,
            Ok(next) => match next.unwrap() {
                Some((ident, data)) => {
                    assert_eq!(data.len(), 300_000, "item {ident} whole");
                    got.push(ident);
                }
                None => break,
            },
        }
    }
    assert_eq!(got, (0..8).collect::<Vec<i64>>());
    assert!(cancelled > 0, "some calls were cancelled mid-item");
}

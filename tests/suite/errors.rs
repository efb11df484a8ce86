//! Bad input yields a typed error for that caller only; the gateway keeps serving.

use crate::harness::spawn_gateway;
use quicswarm::{demo::CounterArgs, CallError, ErrorCode, Json};
use quicswarm_tests::within;

#[tokio::test]
async fn unknown_subroutine_and_wrong_kind() {
    let gw = spawn_gateway(|b| b).await;
    let client = gw.client().await;
    match within("call", client.call("nope", &())).await {
        Err(CallError::UnknownSubroutine(m)) => assert!(m.contains("nope"), "{m}"),
        other => panic!("expected UnknownSubroutine, got {other:?}"),
    }
    assert!(matches!(
        client.stream("nope", &()).await,
        Err(CallError::UnknownSubroutine(_))
    ));
    assert!(matches!(
        client.send("nope", &(), vec![0u8; 100_000]).await,
        Err(CallError::UnknownSubroutine(_))
    ));
    assert!(matches!(
        client.call("counter", &()).await,
        Err(CallError::WrongKind(_))
    ));
    assert!(matches!(
        client.stream("echo", "x").await,
        Err(CallError::WrongKind(_))
    ));
    within("ping", client.ping()).await.unwrap();
}

#[tokio::test]
async fn wrong_argument_type_is_bad_args() {
    let gw = spawn_gateway(|b| b).await;
    let client = gw.client().await;
    // `echo` takes a string; a large integer does not decode as one.
    assert!(matches!(
        client.call("echo", &u64::MAX).await,
        Err(CallError::BadArgs(_))
    ));
    assert!(matches!(
        client.call("echo", &Json("[1, 2]")).await,
        Err(CallError::BadArgs(_))
    ));
    assert!(matches!(
        client.call("echo", &Json("{not json")).await,
        Err(CallError::BadArgs(_))
    ));
    assert!(matches!(
        client.stream("counter", &Json(r#"{"count": -1}"#)).await,
        Err(CallError::BadArgs(_))
    ));
    assert_eq!(
        &within("echo", client.call("echo", "ok")).await.unwrap()[..],
        b"ok"
    );
}

#[tokio::test]
async fn failing_and_panicking_subroutines_fail_only_their_caller() {
    let gw = spawn_gateway(|b| b).await;
    let controller = gw.controller();
    let client = within("connect", controller.get_client(&gw.addr))
        .await
        .unwrap();
    let other = within("connect other", controller.get_client(&gw.addr))
        .await
        .unwrap();
    // Keep a stream running on the other client throughout.
    let mut ongoing = other
        .stream("ticker", &Json(r#"{"count": 1000, "interval_ms": 5}"#))
        .await
        .unwrap();
    within("tick", ongoing.next()).await.unwrap().unwrap();

    match within("fail", client.call("fail", &())).await {
        Err(CallError::Failed(m)) => assert!(m.contains("always fails"), "{m}"),
        other => panic!("expected Failed, got {other:?}"),
    }
    match within("panic", client.call("panic", &())).await {
        Err(e @ CallError::Panicked(_)) => {
            assert!(e.to_string().contains("on purpose"), "{e}");
            assert_eq!(e.code(), ErrorCode::SubroutinePanicked);
        }
        other => panic!("expected Panicked, got {other:?}"),
    }
    // Blocking and streaming variants too.
    gw.gateway
        .registry()
        .batch_blocking("blocking_panic", |_: ()| -> Result<Vec<u8>, String> {
            panic!("blocking boom")
        });
    gw.gateway.registry().stream("stream_fail", |_: (), _| {
        futures_util::stream::iter(vec![
            Ok((0i64, vec![1u8])),
            Err("producer broke".to_string()),
        ])
    });
    assert!(matches!(
        client.call("blocking_panic", &()).await,
        Err(CallError::Panicked(_))
    ));
    let mut s = client.stream("stream_fail", &()).await.unwrap();
    assert_eq!(within("first", s.next()).await.unwrap().unwrap().0, 0);
    match within("failure", s.next()).await {
        Err(CallError::Failed(m)) => assert!(m.contains("producer broke")),
        other => panic!("expected Failed, got {other:?}"),
    }
    assert_eq!(
        s.next().await.unwrap(),
        None,
        "a failed stream stays finished"
    );

    within("ping same client", client.ping()).await.unwrap();
    within("other stream still going", ongoing.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        &other.call("echo", "still here").await.unwrap()[..],
        b"still here"
    );
}

/// Frames over a limit, through the library: typed errors on both sides, and both clients
/// go on. (Raw malformed frames: `raw.rs`, QUIC only.)
#[tokio::test]
async fn frames_over_a_limit_are_typed_errors() {
    let gw = spawn_gateway(quicswarm_tests::small_frames).await;
    let client = gw.client().await;

    // Args over the gateway's frame limit, through the library: a typed error, from the
    // client itself, which knows the limit from the gateway's welcome.
    let big = "y".repeat(10_000);
    let sent = client.stats().bytes_sent;
    match client.call("echo", big.as_str()).await {
        Err(CallError::TooLarge(m)) => assert!(m.contains("4096"), "{m}"),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    let spent = client.stats().bytes_sent - sent;
    assert!(
        spent < 1000,
        "{spent} bytes sent for a request refused locally"
    );

    // An item over the client's limit is refused by the client.
    let mut config = quicswarm::ControllerConfig::with_trust(quicswarm::Trust::Fingerprints(vec![
        gw.fingerprint,
    ]));
    config.max_frame_len = 1000;
    let small = quicswarm::Controller::new(config).unwrap();
    let c2 = within("connect small", small.get_client(&gw.addr))
        .await
        .unwrap();
    let mut s = c2
        .stream(
            "counter",
            &CounterArgs {
                count: 2,
                size: 2000,
            },
        )
        .await
        .unwrap();
    assert!(matches!(
        within("big item", s.next()).await,
        Err(CallError::TooLarge(_))
    ));

    within("ping", client.ping()).await.unwrap();
    within("ping small", c2.ping()).await.unwrap();
}

/// A subroutine that hangs is cancelled at the client's deadline; the gateway goes on.
#[tokio::test]
async fn a_hanging_subroutine_is_cancelled_at_the_deadline() {
    let gw = spawn_gateway(|b| b).await;
    let (dropped_tx, dropped_rx) = tokio::sync::oneshot::channel::<()>();
    let dropped_tx = std::sync::Mutex::new(Some(dropped_tx));
    gw.gateway.registry().batch("hang", move |_: ()| {
        struct OnDrop(Option<tokio::sync::oneshot::Sender<()>>);
        impl Drop for OnDrop {
            fn drop(&mut self) {
                if let Some(tx) = self.0.take() {
                    let _ = tx.send(());
                }
            }
        }
        let guard = OnDrop(dropped_tx.lock().unwrap().take());
        async move {
            let _guard = guard;
            std::future::pending::<()>().await;
            Ok::<Vec<u8>, String>(Vec::new())
        }
    });
    let mut config = quicswarm::ControllerConfig::with_trust(quicswarm::Trust::Fingerprints(vec![
        gw.fingerprint,
    ]));
    config.call_timeout = Some(std::time::Duration::from_millis(300));
    let controller = quicswarm::Controller::new(config).unwrap();
    let client = within("connect", controller.get_client(&gw.addr))
        .await
        .unwrap();
    match within("hang", client.call("hang", &())).await {
        Err(CallError::Timeout(_)) => {}
        Err(CallError::Remote { code, .. }) => assert_eq!(code, ErrorCode::Timeout),
        other => panic!("expected a timeout, got {other:?}"),
    }
    within("the gateway cancelled the subroutine", dropped_rx)
        .await
        .unwrap();
    within("ping", client.ping()).await.unwrap();
}

/// A client that opens every stream it may and never reads, and one that stops reading in the
/// middle of a big transfer, only slow themselves down: another client is served as usual.
#[tokio::test]
async fn clients_that_stop_reading_only_hurt_themselves() {
    let gw = spawn_gateway(|b| {
        let mut limits = quicswarm::Limits::default();
        // Four streams of unread data (8 MB stream windows) stay within the 64 MB connection
        // window, so the greedy client's own responses still fit.
        limits.max_concurrent_ops = 4;
        b.limits(limits)
    })
    .await;
    let controller = gw.controller();
    let greedy = within("greedy", controller.get_client(&gw.addr))
        .await
        .unwrap();
    let mut held = Vec::new();
    for _ in 0..4 {
        // Each asks for 64 MiB and never reads past the first item.
        let mut s = within(
            "subscribe",
            greedy.stream(
                "counter",
                &CounterArgs {
                    count: 1024,
                    size: 64 * 1024,
                },
            ),
        )
        .await
        .unwrap();
        within("first item", s.next()).await.unwrap().unwrap();
        held.push(s);
    }
    // The greedy client is at its stream limit: its next operation waits (QUIC: the gateway
    // grants no more streams) or is refused (TCP: yamux resets a stream over the limit)...
    let blocked = tokio::time::timeout(std::time::Duration::from_millis(200), greedy.ping()).await;
    match crate::harness::TRANSPORT {
        quicswarm::TransportKind::Quic => assert!(
            blocked.is_err(),
            "a fifth stream must wait for the gateway to allow it"
        ),
        _ => assert!(
            !matches!(blocked, Ok(Ok(_))),
            "a fifth stream must not be served"
        ),
    }
    // ...while everyone else is served.
    let polite = within("polite", controller.get_client(&gw.addr))
        .await
        .unwrap();
    for _ in 0..20 {
        within("ping", polite.ping()).await.unwrap();
    }
    let mut s = polite
        .stream(
            "counter",
            &CounterArgs {
                count: 200,
                size: 64 * 1024,
            },
        )
        .await
        .unwrap();
    let mut n = 0;
    while within("item", s.next()).await.unwrap().is_some() {
        n += 1;
    }
    assert_eq!(n, 200);
    drop(held);
    within("greedy recovers", greedy.ping()).await.unwrap();
}

/// Sends `()` when dropped: tells a test that a producer was dropped.
struct DropNotify(Option<tokio::sync::oneshot::Sender<()>>);

impl Drop for DropNotify {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

/// Pends forever after what it was given: an input that stalls.
struct Stall;

impl tokio::io::AsyncRead for Stall {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        _: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Pending
    }
}

/// A client that stops reading a stream, or stops sending a buffer it started, holds the
/// gateway's task and buffers only until the stall timeout; then its operation ends with a
/// typed error, and the gateway serves on.
#[tokio::test]
async fn stalled_clients_are_cut_off_after_the_stall_timeout() {
    let gw = spawn_gateway(quicswarm_tests::short_stall).await;
    use futures_util::StreamExt as _;
    let (dropped_tx, dropped_rx) = tokio::sync::oneshot::channel();
    let once = std::sync::Mutex::new(Some(dropped_tx));
    gw.gateway.registry().stream("endless", move |_: (), _| {
        let notify = DropNotify(once.lock().unwrap().take());
        futures_util::stream::iter(0i64..100_000).map(move |i| {
            let _keep = &notify;
            Ok::<_, String>((i, vec![0u8; 64 * 1024]))
        })
    });
    let client = gw.client().await;

    // A reader that stops: the gateway's writes block once our windows are full.
    let mut s = within("subscribe", client.stream("endless", &()))
        .await
        .unwrap();
    within("first item", s.next()).await.unwrap().unwrap();
    within("the producer is dropped after the stall", dropped_rx)
        .await
        .unwrap();
    // What was buffered may still arrive; the stream then ends with Timeout.
    let end = within("the end of the stream", async {
        loop {
            match s.next().await {
                Ok(Some(_)) => continue,
                other => break other,
            }
        }
    })
    .await;
    match end {
        Err(e) => assert_eq!(e.code(), ErrorCode::Timeout, "{e}"),
        Ok(None) => panic!("a cut-off stream must not end cleanly"),
        Ok(Some(_)) => unreachable!(),
    }

    // A sender that stops: its sink fails with a message naming the stall.
    let input = tokio::io::AsyncReadExt::chain(&[1u8; 1000][..], Stall);
    match within(
        "stalled upload",
        client.send_reader("byte_sum", &(), input, None),
    )
    .await
    {
        Err(CallError::Failed(m)) => assert!(m.contains("stall"), "{m}"),
        other => panic!("expected a failed sink, got {other:?}"),
    }
    within("ping", client.ping()).await.unwrap();
}

/// Input that yields nothing until `go` fires, then fails (`fail`) or stalls for ever.
struct After {
    go: Option<tokio::sync::oneshot::Receiver<()>>,
    fail: bool,
}

impl tokio::io::AsyncRead for After {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        _: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::{future::Future, task::Poll};
        if let Some(go) = self.go.as_mut() {
            if std::pin::Pin::new(go).poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.go = None;
        }
        if self.fail {
            Poll::Ready(Err(std::io::Error::other("the disk went away")))
        } else {
            Poll::Pending
        }
    }
}

/// Sends what a sink saw when it ends, however it ends.
struct Seen(
    tokio::sync::mpsc::UnboundedSender<Result<usize, String>>,
    Result<usize, String>,
);

impl Drop for Seen {
    fn drop(&mut self) {
        let _ = self.0.send(self.1.clone());
    }
}

/// A body cut short on our side (the input fails, the call times out) reaches the sink as a
/// cancelled buffer, never as a whole shorter one: a QUIC stream dropped unfinished finishes
/// itself, so the client must reset it.
#[tokio::test]
async fn a_body_cut_short_never_arrives_whole() {
    let gw = spawn_gateway(|b| b).await;
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
    let (started_tx, mut started_rx) = tokio::sync::mpsc::unbounded_channel();
    gw.gateway
        .registry()
        .sink("record", move |_: (), data: quicswarm::SinkData| {
            let mut seen = Seen(seen_tx.clone(), Err("cancelled".into()));
            let started = started_tx.clone();
            async move {
                let seen = &mut seen;
                let _ = started.send(());
                let got = data.collect().await.map(|b| b.len());
                seen.1 = got.as_ref().map_err(ToString::to_string).copied();
                got.map(|n| n as i64).map_err(|e| e.to_string())
            }
        });
    // The input's first bytes, then `After` once the sink runs.
    let (go_tx, go) = tokio::sync::oneshot::channel();
    let forward = async move {
        started_rx.recv().await;
        let _ = go_tx.send(());
        started_rx
    };
    let client = gw.client().await;

    // The input fails: the caller hears why, and the sink sees no complete buffer.
    let after = After {
        go: Some(go),
        fail: true,
    };
    let input = tokio::io::AsyncReadExt::chain(&[1u8; 1000][..], after);
    let (result, mut started_rx) = within(
        "failing input",
        futures_util::future::join(client.send_reader("record", &(), input, None), forward),
    )
    .await;
    match result {
        Err(CallError::Io(m)) => assert!(m.contains("disk"), "{m}"),
        other => panic!("expected the input's error, got {other:?}"),
    }
    let seen = within("the sink's view", seen_rx.recv()).await.unwrap();
    assert!(seen.is_err(), "the sink took a cut body as whole: {seen:?}");

    // The call times out while the input stalls: the same.
    let mut config = quicswarm::ControllerConfig::with_trust(quicswarm::Trust::Fingerprints(vec![
        gw.fingerprint,
    ]));
    config.call_timeout = Some(std::time::Duration::from_secs(3));
    let impatient = quicswarm::Controller::new(config).unwrap();
    let client = within("connect", impatient.get_client(&gw.addr))
        .await
        .unwrap();
    let (go_tx, go) = tokio::sync::oneshot::channel();
    let forward = async move {
        started_rx.recv().await;
        let _ = go_tx.send(());
    };
    let input = tokio::io::AsyncReadExt::chain(
        &[1u8; 1000][..],
        After {
            go: Some(go),
            fail: false,
        },
    );
    let (result, ()) = within(
        "stalled input",
        futures_util::future::join(client.send_reader("record", &(), input, None), forward),
    )
    .await;
    match result {
        Err(CallError::Timeout(_)) => {}
        other => panic!("expected a timeout, got {other:?}"),
    }
    let seen = within("the sink's view", seen_rx.recv()).await.unwrap();
    assert!(seen.is_err(), "the sink took a cut body as whole: {seen:?}");
    within("ping", client.ping()).await.unwrap();
}

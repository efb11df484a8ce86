//! Delivery modes: `Latest` (an item per stream, fresh first) and `Datagram`.

use std::time::Duration;

use quicswarm::{demo::CounterArgs, CallError, Delivery, SubscribeOptions};
use quicswarm_tests::{spawn_gateway, within};

#[tokio::test]
async fn datagram_delivery_carries_small_items() {
    let gw = spawn_gateway(|b| b).await;
    let client = gw.client().await;
    let options = SubscribeOptions::delivery(Delivery::Datagram);
    let mut items = within(
        "subscribe",
        client.subscribe(
            "counter",
            &CounterArgs {
                count: 200,
                size: 100,
            },
            &options,
        ),
    )
    .await
    .unwrap();
    let mut idents = Vec::new();
    while let Some((ident, data)) = within("item", items.next()).await.unwrap() {
        assert_eq!(data.len(), 100);
        idents.push(ident);
    }
    idents.sort_unstable();
    idents.dedup();
    // Unreliable by design, but loopback loses nothing worth mentioning.
    assert!(idents.len() >= 190, "{} of 200 datagrams", idents.len());
    assert!(idents.iter().all(|&i| (0..200).contains(&i)));
    // A reliable stream on the same client is unaffected.
    assert_eq!(&client.call("echo", "after").await.unwrap()[..], b"after");
}

#[tokio::test]
async fn an_item_too_large_for_a_datagram_is_a_typed_error() {
    let gw = spawn_gateway(|b| b).await;
    let client = gw.client().await;
    let options = SubscribeOptions::delivery(Delivery::Datagram);
    let mut items = client
        .subscribe(
            "counter",
            &CounterArgs {
                count: 3,
                size: 5000,
            },
            &options,
        )
        .await
        .unwrap();
    match within("item", items.next()).await {
        Err(CallError::TooLarge(m)) => assert!(m.contains("datagram"), "{m}"),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    within("ping", client.ping()).await.unwrap();
}

#[tokio::test]
async fn latest_delivery_hands_out_fresh_items_in_order() {
    let gw = spawn_gateway(|b| b).await;
    let client = gw.client().await;
    let mut options = SubscribeOptions::delivery(Delivery::Latest);
    options.priority = 5;
    let mut frames = within(
        "subscribe",
        client.subscribe(
            "counter",
            &CounterArgs {
                count: 60,
                size: 40_000,
            },
            &options,
        ),
    )
    .await
    .unwrap();
    let mut last = -1;
    let mut received = 0u64;
    while let Some((ident, data)) = within("frame", frames.next()).await.unwrap() {
        assert!(
            ident > last,
            "frames only move forward: {ident} after {last}"
        );
        assert_eq!(data.len(), 40_000);
        last = ident;
        received += 1;
    }
    assert_eq!(last, 59, "the newest frame always arrives");
    assert!(frames.is_complete());
    assert_eq!(
        received + frames.superseded(),
        60,
        "every frame is delivered or superseded"
    );
}

#[tokio::test]
async fn max_age_drops_stale_items() {
    let gw = spawn_gateway(|b| b).await;
    let client = gw.client().await;
    for delivery in [Delivery::Latest, Delivery::Datagram] {
        let mut options = SubscribeOptions::delivery(delivery);
        options.max_age = Some(Duration::ZERO);
        let mut items = client
            .subscribe(
                "counter",
                &CounterArgs {
                    count: 20,
                    size: 10,
                },
                &options,
            )
            .await
            .unwrap();
        assert_eq!(
            within("end", items.next()).await.unwrap(),
            None,
            "{delivery:?}: everything is older than 0"
        );
        assert!(items.stale() > 0, "{delivery:?}");
    }
}

/// A camera-like producer: `count` frames of `size` bytes, one every `every_ms`.
pub(crate) fn register_camera(gw: &quicswarm_tests::TestGateway) {
    gw.gateway.registry().stream(
        "camera",
        |(count, size, every_ms): (i64, usize, u64), _ctx| {
            futures_util::stream::unfold(0i64, move |i| async move {
                if i >= count {
                    return None;
                }
                if i > 0 {
                    tokio::time::sleep(Duration::from_millis(every_ms)).await;
                }
                Some((Ok::<_, String>((i, vec![i as u8; size])), i + 1))
            })
        },
    );
}

#[tokio::test]
async fn latest_delivery_supersedes_frames_on_a_slow_link() {
    let link = quicswarm_tests::link::Link::new(7);
    // 2 MB/s out of the gateway; the camera offers 40 KB x 200 fps = 8 MB/s.
    link.set_rate(Some(2_000_000), 512 * 1024);
    let wrapper = link.wrapper();
    let gw = spawn_gateway(move |b| b.socket_wrapper(wrapper)).await;
    register_camera(&gw);
    let client = gw.client().await;
    let options = SubscribeOptions::delivery(Delivery::Latest);
    let mut frames = within(
        "subscribe",
        client.subscribe("camera", &(100i64, 40_000usize, 5u64), &options),
    )
    .await
    .unwrap();
    let (mut last, mut received) = (-1, 0u64);
    while let Some((ident, data)) = within("frame", frames.next()).await.unwrap() {
        assert!(ident > last);
        assert!(
            data.iter().all(|&b| b == ident as u8),
            "frame {ident} intact"
        );
        last = ident;
        received += 1;
    }
    assert_eq!(last, 99, "the newest frame arrives");
    assert!(
        frames.superseded() > 0,
        "a 2 MB/s link cannot carry 8 MB/s: frames must be superseded"
    );
    assert!(received >= 10, "fresh frames still get through: {received}");
    assert_eq!(
        received + frames.superseded(),
        100,
        "each frame delivered or superseded"
    );
}

/// Strict priorities on a slow link: a high-priority item overtakes a buffered low-priority
/// bulk stream; a lower-priority one waits for it.
#[tokio::test]
async fn priorities_order_streams_on_a_slow_link() {
    use std::sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    };
    let link = quicswarm_tests::link::Link::new(3);
    link.set_rate(Some(1_500_000), 8 << 20);
    let wrapper = link.wrapper();
    let gw = spawn_gateway(move |b| b.socket_wrapper(wrapper)).await;
    let client = gw.client().await;
    const BULK: u64 = 24;
    for (priority, overtakes) in [(10, true), (-10, false)] {
        let bulk = client
            .stream(
                "counter",
                &CounterArgs {
                    count: BULK,
                    size: 64 * 1024,
                },
            )
            .await
            .unwrap();
        let done = Arc::new(AtomicU64::new(0));
        let d = done.clone();
        let reader = tokio::spawn(async move {
            let mut bulk = bulk;
            while bulk.next().await.unwrap().is_some() {
                d.fetch_add(1, Ordering::SeqCst);
            }
        });
        // Wait until the bulk stream is flowing, so its data sits queued at the gateway.
        while done.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut options = SubscribeOptions::default();
        options.priority = priority;
        let mut small = client
            .subscribe("counter", &CounterArgs { count: 1, size: 16 }, &options)
            .await
            .unwrap();
        within("small item", small.next()).await.unwrap().unwrap();
        let at = done.load(Ordering::SeqCst);
        if overtakes {
            assert!(
                at < BULK / 2,
                "priority {priority}: waited for {at} of {BULK} bulk items"
            );
        } else {
            assert!(
                at >= BULK - 2,
                "priority {priority}: arrived after only {at} of {BULK} bulk items"
            );
        }
        within("bulk end", reader).await.unwrap();
    }
}

/// A client of `gw` whose packets cross `link` (its controller is returned to keep it alive).
async fn through(
    link: &quicswarm_tests::link::Link,
    gw: &quicswarm_tests::TestGateway,
) -> (quicswarm::Controller, quicswarm::Client) {
    let trust = quicswarm::Trust::Fingerprints(vec![gw.fingerprint]);
    let mut config = quicswarm::ControllerConfig::with_trust(trust);
    config.socket_wrapper = Some(link.wrapper());
    let controller = quicswarm::Controller::new(config).unwrap();
    let client = within("connect", controller.get_client(&gw.addr))
        .await
        .unwrap();
    (controller, client)
}

#[tokio::test]
async fn datagrams_on_a_lossy_link_lose_some_and_fail_none() {
    let link = quicswarm_tests::link::Link::new(11);
    link.set_loss(0.2);
    let gw = spawn_gateway(|b| b).await;
    let (_controller, client) = through(&link, &gw).await;
    let options = SubscribeOptions::delivery(Delivery::Datagram);
    let mut items = client
        .subscribe(
            "ticker",
            &quicswarm::Json(r#"{"count": 300, "interval_ms": 1}"#),
            &options,
        )
        .await
        .unwrap();
    let mut n = 0;
    while within("item", items.next()).await.unwrap().is_some() {
        n += 1;
    }
    let (_, dropped) = link.counters();
    assert!(dropped > 0, "the link dropped datagrams");
    assert!(
        n < 300 && n > 150,
        "{n} of 300 arrived through a 20% loss link"
    );
}

/// With a max age, an item stuck in flight behind a slow link is cancelled for a newer one.
#[tokio::test]
async fn latest_cancels_an_item_in_flight_past_its_max_age() {
    let link = quicswarm_tests::link::Link::new(5);
    // 400 KB/s: a 40 KB frame needs 100 ms; frames come every 20 ms.
    link.set_rate(Some(400_000), 1 << 20);
    let wrapper = link.wrapper();
    let gw = spawn_gateway(move |b| b.socket_wrapper(wrapper)).await;
    register_camera(&gw);
    let client = gw.client().await;
    let mut options = SubscribeOptions::delivery(Delivery::Latest);
    options.max_age = Some(Duration::from_millis(50));
    let mut frames = client
        .subscribe("camera", &(30i64, 40_000usize, 20u64), &options)
        .await
        .unwrap();
    let mut received = 0u64;
    while within("frame", frames.next()).await.unwrap().is_some() {
        received += 1;
    }
    assert!(
        frames.superseded() > 0,
        "frames in flight past 50 ms were cancelled"
    );
    assert_eq!(
        received + frames.stale() + frames.superseded(),
        30,
        "every frame accounted for"
    );
}

/// `Unordered` and `Redundant`: every item arrives, exactly once, through loss (each on its
/// own stream, so a lost packet holds back only the items it carried; `Redundant` also as a
/// datagram, and the copy that comes second is dropped), more of them than may be in flight.
async fn every_item_once_through_loss(delivery: Delivery, seed: u64) {
    let link = quicswarm_tests::link::Link::new(seed);
    link.set_loss(0.1);
    let gw = spawn_gateway(|b| b).await;
    let (_controller, client) = through(&link, &gw).await;
    let options = SubscribeOptions::delivery(delivery);
    let args = CounterArgs {
        count: 600,
        size: 100,
    };
    let mut items = within("subscribe", client.subscribe("counter", &args, &options))
        .await
        .unwrap();
    let mut idents = Vec::new();
    while let Some((ident, data)) = within("item", items.next()).await.unwrap() {
        assert_eq!(data.len(), 100);
        idents.push(ident);
    }
    assert!(link.counters().1 > 0, "the link dropped packets");
    idents.sort_unstable();
    assert_eq!(
        idents,
        (0..600).collect::<Vec<_>>(),
        "{delivery:?}: each item exactly once"
    );
    assert_eq!(items.superseded(), 0);
}

#[tokio::test]
async fn unordered_delivery_carries_every_item_once_through_a_lossy_link() {
    every_item_once_through_loss(Delivery::Unordered, 13).await;
}

#[tokio::test]
async fn redundant_delivery_hands_out_every_item_once_through_a_lossy_link() {
    every_item_once_through_loss(Delivery::Redundant, 17).await;
}

/// Dropping an `Unordered` subscription stops its producer on the gateway (the items in
/// flight are reset); the connection goes on.
#[tokio::test]
async fn an_unordered_subscription_dropped_early_stops_its_producer() {
    let gw = spawn_gateway(|b| b).await;
    let client = gw.client().await;
    let options = SubscribeOptions::delivery(Delivery::Unordered);
    let mut items = within(
        "subscribe",
        client.subscribe(
            "ticker",
            &quicswarm::Json(r#"{"count": 100000, "interval_ms": 1}"#),
            &options,
        ),
    )
    .await
    .unwrap();
    for _ in 0..5 {
        assert!(within("item", items.next()).await.unwrap().is_some());
    }
    drop(items);
    // The stopped subscription is counted as such once the gateway has noticed.
    let stopped = "quicswarm_operations_total{kind=\"stream\",result=\"stopped\"} 1";
    within("the producer to stop", async {
        while !gw.gateway.metrics().lines().any(|l| l == stopped) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(&client.call("echo", "after").await.unwrap()[..], b"after");
}

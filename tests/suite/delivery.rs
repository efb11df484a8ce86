//! Delivery modes: `Latest` (an item per stream, fresh first) and `Datagram`.

use std::time::Duration;

use quicswarm::{demo::CounterArgs, CallError, Delivery, SubscribeOptions};
use quicswarm_tests::{spawn_gateway, within};

#[tokio::test]
async fn datagram_delivery_carries_small_items() {
    let gw = spawn_gateway(|b| b).await;
    let client = within("connect", gw.controller().get_client(&gw.addr))
        .await
        .unwrap();
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
    let client = within("connect", gw.controller().get_client(&gw.addr))
        .await
        .unwrap();
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
    let client = within("connect", gw.controller().get_client(&gw.addr))
        .await
        .unwrap();
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
    let client = within("connect", gw.controller().get_client(&gw.addr))
        .await
        .unwrap();
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

//! `Fec` delivery: frames as datagrams with Reed–Solomon recovery shards.

use quicswarm::{CallError, Delivery, SubscribeOptions};
use quicswarm_tests::{spawn_gateway, within};

use super::delivery::register_camera;

/// Through a link losing one packet in ten, 40 KB frames (about 30 datagrams each, so nearly
/// every frame loses some) come out whole and exact, rebuilt from their recovery shards.
#[tokio::test]
async fn frames_lost_in_part_are_rebuilt_exactly() {
    let link = quicswarm_tests::link::Link::new(21);
    link.set_loss(0.1);
    // On the gateway's socket: its sends are dropped one datagram at a time (a receive drops
    // a whole batch of datagrams, often a whole frame on loopback).
    let wrapper = link.wrapper();
    let gw = spawn_gateway(move |b| b.socket_wrapper(wrapper)).await;
    register_camera(&gw);
    let client = gw.client().await;
    let mut options = SubscribeOptions::delivery(Delivery::Fec);
    options.fec_percent = Some(50);
    let frames = 40i64;
    let mut items = within(
        "subscribe",
        client.subscribe("camera", &(frames, 40_000usize, 20u64), &options),
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    while let Some((ident, data)) = within("frame", items.next()).await.unwrap() {
        assert_eq!(data.len(), 40_000, "frame {ident}");
        assert!(
            data.iter().all(|&b| b == ident as u8),
            "frame {ident} exact"
        );
        got.push(ident);
    }
    assert!(link.counters().1 > 0, "the link dropped packets");
    assert!(
        items.repaired() > 0,
        "some frames were rebuilt from recovery shards ({} of {} received)",
        items.repaired(),
        got.len()
    );
    assert!(got.windows(2).all(|w| w[0] < w[1]), "in order: {got:?}");
    assert!(
        got.len() as u64 + items.lost() + items.superseded() <= frames as u64,
        "no frame counted twice"
    );
    // Reports lost on the way back hold the gateway's window until they are repaired, and
    // newer frames supersede waiting ones meanwhile: a share of the frames, not all.
    assert!(
        got.len() >= 5,
        "{} of {frames} frames, {} lost, {} superseded, {} repaired",
        got.len(),
        items.lost(),
        items.superseded(),
        items.repaired()
    );
    // The connection carries on.
    assert_eq!(&client.call("echo", "after").await.unwrap()[..], b"after");
}

/// An item past 2,048 shards ends the subscription with a typed error; the connection goes on.
#[tokio::test]
async fn an_item_too_large_for_its_shards_is_a_typed_error() {
    let gw = spawn_gateway(|b| b).await;
    register_camera(&gw);
    let client = gw.client().await;
    let options = SubscribeOptions::delivery(Delivery::Fec);
    let mut items = within(
        "subscribe",
        client.subscribe("camera", &(2i64, 4_000_000usize, 0u64), &options),
    )
    .await
    .unwrap();
    match within("item", items.next()).await {
        Err(CallError::TooLarge(m)) => assert!(m.contains("shards"), "{m}"),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    within("ping", client.ping()).await.unwrap();
}

/// On a clean link every frame arrives, none rebuilt or lost, and the client's reports keep
/// the gateway sending (without them it would send two frames and then one a second).
#[tokio::test]
async fn a_clean_link_delivers_every_frame() {
    let gw = spawn_gateway(|b| b).await;
    register_camera(&gw);
    let client = gw.client().await;
    let options = SubscribeOptions::delivery(Delivery::Fec);
    let frames = 60i64;
    let mut items = within(
        "subscribe",
        client.subscribe("camera", &(frames, 10_000usize, 5u64), &options),
    )
    .await
    .unwrap();
    let mut got = 0i64;
    while let Some((ident, data)) = within("frame", items.next()).await.unwrap() {
        assert!(data.iter().all(|&b| b == ident as u8));
        got += 1;
    }
    assert_eq!((items.repaired(), items.lost()), (0, 0));
    assert_eq!(got as u64 + items.superseded(), frames as u64);
    // Without the reports, two frames would leave and the next only when they expire (a
    // second later): nearly all of these 300 ms of frames would be superseded.
    assert!(
        got > frames / 2,
        "{got} of {frames} frames, the rest superseded"
    );
}

/// The client's reports are read however long the camera pauses: after a pause longer than
/// the gateway's stall timeout, frames flow at their pace again. (Were the reports given up
/// with the stall timeout, the gateway would send two frames and then one a second, and
/// nearly every frame after the pause would be superseded.)
#[tokio::test]
async fn reports_outlive_a_pause_longer_than_the_stall_timeout() {
    let gw = spawn_gateway(quicswarm_tests::short_stall).await;
    let (before, after) = (10i64, 60i64);
    gw.gateway
        .registry()
        .stream("paused_camera", move |(): (), _ctx| {
            futures_util::stream::unfold(0i64, move |i| async move {
                if i >= before + after {
                    return None;
                }
                // 5 ms between frames, and 900 ms (three stall timeouts) before frame 10.
                let wait = match i {
                    0 => 0,
                    i if i == before => 900,
                    _ => 5,
                };
                tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
                Some((Ok::<_, String>((i, vec![i as u8; 10_000])), i + 1))
            })
        });
    let client = gw.client().await;
    let options = SubscribeOptions::delivery(Delivery::Fec);
    let mut items = within(
        "subscribe",
        client.subscribe("paused_camera", &(), &options),
    )
    .await
    .unwrap();
    let mut got_after = 0i64;
    while let Some((ident, data)) = within("frame", items.next()).await.unwrap() {
        assert!(data.iter().all(|&b| b == ident as u8));
        if ident >= before {
            got_after += 1;
        }
    }
    assert!(
        got_after > after / 2,
        "{got_after} of the {after} frames after the pause ({} superseded in all)",
        items.superseded()
    );
}

//! Staying connected: a `Session` notices an outage, reconnects, reports its state and resumes
//! subscriptions after the last ident; an interrupted call is not repeated.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use quicswarm::{
    CallError, ControllerConfig, LinkState, ReconnectPolicy, Session, SubscribeOptions,
    TransportTuning, Trust,
};
use quicswarm_tests::{link::Link, spawn_gateway, within, TestGateway};

fn tuning() -> TransportTuning {
    let mut t = TransportTuning::default();
    t.idle_timeout = Duration::from_millis(600);
    t.keep_alive = Duration::from_millis(100);
    t.initial_rtt = Duration::from_millis(20);
    t
}

fn policy() -> ReconnectPolicy {
    let mut p = ReconnectPolicy::default();
    p.initial_backoff = Duration::from_millis(20);
    p.max_backoff = Duration::from_millis(200);
    p
}

async fn setup() -> (TestGateway, Link, Session) {
    let gw = spawn_gateway(|b| b.transport(tuning())).await;
    // A slow sequence that can resume: idents from `resume_after + 1`.
    gw.gateway
        .registry()
        .stream("seq", |count: i64, ctx: quicswarm::StreamContext| {
            let start = ctx.resume_after.map_or(0, |l| l + 1);
            futures_util::stream::unfold(start, move |i| async move {
                if i >= count {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                Some((Ok::<_, String>((i, i.to_le_bytes().to_vec())), i + 1))
            })
        });
    let link = Link::new(9);
    let mut config = ControllerConfig::with_trust(Trust::Fingerprints(vec![gw.fingerprint]));
    config.transport = tuning();
    config.socket_wrapper = Some(link.wrapper());
    config.connect_timeout = Duration::from_secs(2);
    let controller = quicswarm::Controller::new(config).unwrap();
    let session = within("session", Session::connect(&controller, &gw.addr, policy()))
        .await
        .unwrap();
    (gw, link, session)
}

#[tokio::test]
async fn a_session_reconnects_and_resumes_after_an_outage() {
    let (_gw, link, session) = setup().await;
    let mut states = session.watch_state();
    let seen = Arc::new(std::sync::Mutex::new(vec![*states.borrow()]));
    let log = seen.clone();
    tokio::spawn(async move {
        while states.changed().await.is_ok() {
            log.lock().unwrap().push(*states.borrow());
        }
    });
    let mut seq = within(
        "subscribe",
        session.subscribe("seq", &80i64, &SubscribeOptions::default()),
    )
    .await
    .unwrap();
    let mut idents = Vec::new();
    for _ in 0..10 {
        idents.push(within("item", seq.next()).await.unwrap().unwrap().0);
    }
    link.set_down(true);
    let mut watch = session.watch_state();
    within(
        "outage noticed",
        watch.wait_for(|s| matches!(s, LinkState::Reconnecting { .. })),
    )
    .await
    .unwrap();
    link.set_down(false);
    while let Some((ident, data)) = within("item", seq.next()).await.unwrap() {
        assert_eq!(data, ident.to_le_bytes().to_vec());
        idents.push(ident);
    }
    assert_eq!(
        idents,
        (0..80).collect::<Vec<i64>>(),
        "no gap, no duplicate across the outage"
    );
    assert!(seq.resumed() >= 1);
    assert!(session.reconnects() >= 1);
    assert_eq!(session.state(), LinkState::Connected);
    let states = seen.lock().unwrap().clone();
    assert_eq!(states.first(), Some(&LinkState::Connected));
    assert!(
        states
            .iter()
            .any(|s| matches!(s, LinkState::Reconnecting { .. })),
        "{states:?}"
    );
    assert_eq!(states.last(), Some(&LinkState::Connected), "{states:?}");
}

#[tokio::test]
async fn a_call_cut_by_an_outage_fails_and_is_not_repeated() {
    let (gw, link, session) = setup().await;
    let runs = Arc::new(AtomicU64::new(0));
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    let started_tx = std::sync::Mutex::new(Some(started_tx));
    let r = runs.clone();
    gw.gateway.registry().batch("drive", move |_: ()| {
        r.fetch_add(1, Ordering::SeqCst);
        if let Some(tx) = started_tx.lock().unwrap().take() {
            let _ = tx.send(());
        }
        async {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            Ok::<_, String>("driven")
        }
    });
    let call = tokio::spawn({
        let client = session.client();
        async move { client.call("drive", &()).await }
    });
    within("drive started", started_rx).await.unwrap();
    link.set_down(true);
    match within("call", call).await.unwrap() {
        Err(CallError::ConnectionLost(_)) => {}
        other => panic!("expected ConnectionLost, got {other:?}"),
    }
    link.set_down(false);
    within("reconnected", session.connected()).await.unwrap();
    assert_eq!(
        &within("echo", session.call("echo", "after")).await.unwrap()[..],
        b"after"
    );
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "the interrupted command ran once and was not re-sent"
    );
}

/// The gateway restarts (same address, same certificate): the session reconnects and the
/// subscription resumes where it stopped.
#[tokio::test]
async fn a_session_survives_a_gateway_restart() {
    quicswarm_tests::init_tracing();
    let identity = quicswarm::Identity::self_signed(&[]).unwrap();
    let fp = identity.fingerprint();
    let start = |listen: String, identity: quicswarm::Identity| async move {
        let registry = quicswarm::demo::registry();
        registry.stream("seq", |count: i64, ctx: quicswarm::StreamContext| {
            let start = ctx.resume_after.map_or(0, |l| l + 1);
            futures_util::stream::unfold(start, move |i| async move {
                if i >= count {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                Some((Ok::<_, String>((i, Vec::new())), i + 1))
            })
        });
        quicswarm::Gateway::builder()
            .listen(listen.parse().unwrap())
            .identity(identity)
            .transport(tuning())
            .registry(registry)
            .spawn()
            .await
            .unwrap()
    };
    let first = start("127.0.0.1:0".into(), identity.clone()).await;
    let addr = first.local_addr().to_string();
    let mut config = ControllerConfig::with_trust(Trust::Fingerprints(vec![fp]));
    config.transport = tuning();
    config.connect_timeout = Duration::from_secs(2);
    let controller = quicswarm::Controller::new(config).unwrap();
    let session = within("session", Session::connect(&controller, &addr, policy()))
        .await
        .unwrap();
    let mut seq = session
        .subscribe("seq", &60i64, &SubscribeOptions::default())
        .await
        .unwrap();
    let mut idents = Vec::new();
    for _ in 0..5 {
        idents.push(within("item", seq.next()).await.unwrap().unwrap().0);
    }
    first.shutdown(Duration::from_millis(50)).await;
    // The old socket closes when its endpoint driver ends; there is no event for it.
    for _ in 0..200 {
        if std::net::UdpSocket::bind(addr.as_str()).is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _second = start(addr.clone(), identity).await;
    while let Some((ident, _)) = within("item", seq.next()).await.unwrap() {
        idents.push(ident);
    }
    assert_eq!(
        idents,
        (0..60).collect::<Vec<i64>>(),
        "resumed after the restart without a gap"
    );
    assert!(session.reconnects() >= 1);
}

/// A call given up on while the link is down is never run: when the link returns, QUIC would
/// retransmit the request, but the client reset its stream when it gave up.
#[tokio::test]
async fn a_call_given_up_during_an_outage_never_runs_later() {
    let gw = spawn_gateway(|b| b).await;
    let ran = Arc::new(AtomicU64::new(0));
    let r = ran.clone();
    gw.gateway.registry().batch("drive", move |_: ()| {
        let r = r.clone();
        async move {
            r.fetch_add(1, Ordering::SeqCst);
            Ok::<_, String>(Vec::new())
        }
    });
    let link = Link::new(3);
    let mut config = ControllerConfig::with_trust(Trust::Fingerprints(vec![gw.fingerprint]));
    // Long idle timeout: the connection outlives the outage, so its retransmissions would
    // deliver the request afterwards.
    config.socket_wrapper = Some(link.wrapper());
    let controller = quicswarm::Controller::new(config).unwrap();
    let client = within("connect", controller.get_client(&gw.addr))
        .await
        .unwrap();
    within("warm", client.call("drive", &())).await.unwrap();
    assert_eq!(ran.load(Ordering::SeqCst), 1);

    link.set_down(true);
    let gave_up = tokio::time::timeout(Duration::from_millis(300), client.call("drive", &())).await;
    assert!(
        gave_up.is_err(),
        "the call cannot complete over a dead link"
    );
    link.set_down(false);
    // An event shows the link is back and everything before it was delivered: a ping after
    // the retransmissions.
    within("ping after the outage", client.ping())
        .await
        .unwrap();
    within("a later call", client.call("drive", &()))
        .await
        .unwrap();
    assert_eq!(
        ran.load(Ordering::SeqCst),
        2,
        "the abandoned command must not run"
    );
}

//! 0-RTT: replay-safe requests run from early data, others never do; a gateway that lost its
//! session cache (a restart) makes the client fall back cleanly.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use quicswarm::{ControllerConfig, Gateway, Identity, Trust};
use quicswarm_tests::{link::Link, within};

/// A gateway whose `status` is replay-safe and whose `actuate` counts its runs.
async fn gateway(identity: Identity, listen: &str, actuated: Arc<AtomicU64>) -> Gateway {
    quicswarm_tests::init_tracing();
    let registry = quicswarm::demo::registry();
    registry
        .batch("status", |_: ()| async { Ok::<_, String>("ok") })
        .batch("actuate", move |_: ()| {
            let n = actuated.fetch_add(1, Ordering::SeqCst) + 1;
            async move { Ok::<_, String>(n.to_string()) }
        });
    assert!(registry.set_replay_safe("status", true));
    Gateway::builder()
        .listen(listen.parse().unwrap())
        .identity(identity)
        .registry(registry)
        .spawn()
        .await
        .unwrap()
}

/// A controller whose outgoing datagrams take 30 ms: requests made right after connecting
/// are certainly still early data when they leave.
fn slow_controller(fp: quicswarm::Fingerprint) -> quicswarm::Controller {
    let link = Link::new(1);
    link.set_delay(Duration::from_millis(30));
    let mut config = ControllerConfig::with_trust(Trust::Fingerprints(vec![fp]));
    config.socket_wrapper = Some(link.wrapper());
    config.bind = Some("127.0.0.1:0".parse().unwrap());
    quicswarm::Controller::new(config).unwrap()
}

/// Connects once fully and waits long enough for the session ticket.
async fn prime(controller: &quicswarm::Controller, addr: &str) {
    let c = within("first connect", controller.get_client(addr))
        .await
        .unwrap();
    within("ping", c.ping()).await.unwrap();
    within("ping", c.ping()).await.unwrap();
    within("close", c.close()).await.unwrap();
}

#[tokio::test]
async fn replay_safe_requests_ride_early_data_and_others_wait() {
    let identity = Identity::self_signed(&[]).unwrap();
    let fp = identity.fingerprint();
    let actuated = Arc::new(AtomicU64::new(0));
    let gw = gateway(identity, "127.0.0.1:0", actuated.clone()).await;
    let addr = gw.local_addr().to_string();
    let controller = slow_controller(fp);
    prime(&controller, &addr).await;

    let client = within("0-RTT connect", controller.get_client_0rtt(&addr))
        .await
        .unwrap();
    // Both leave at once, as early data.
    let (status, actuate) = tokio::join!(client.call("status", &()), client.call("actuate", &()));
    assert_eq!(
        &within("status", async { status }).await.unwrap()[..],
        b"ok"
    );
    assert_eq!(&actuate.unwrap()[..], b"1");
    let stats = gw.stats();
    assert!(
        stats.early_served >= 1,
        "status was answered from early data: {stats:?}"
    );
    assert_eq!(
        stats.too_early, 1,
        "actuate was refused in early data: {stats:?}"
    );
    assert_eq!(
        actuated.load(Ordering::SeqCst),
        1,
        "and ran once, after the handshake"
    );
    // The pair works as any other.
    within("ping", client.ping()).await.unwrap();
    assert_eq!(client.pool().1, 5);
}

#[tokio::test]
async fn a_restarted_gateway_rejects_0rtt_and_the_client_falls_back() {
    let identity = Identity::self_signed(&[]).unwrap();
    let fp = identity.fingerprint();
    let actuated = Arc::new(AtomicU64::new(0));
    let first = gateway(identity.clone(), "127.0.0.1:0", actuated.clone()).await;
    let addr = first.local_addr().to_string();
    let controller = slow_controller(fp);
    prime(&controller, &addr).await;
    // Restart on the same address: the session cache is gone.
    first.shutdown(Duration::from_millis(100)).await;
    // The old socket closes when the endpoint's driver task ends; there is no event for it.
    for _ in 0..200 {
        if std::net::UdpSocket::bind(addr.as_str()).is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let second = gateway(identity, &addr, actuated.clone()).await;

    let client = within("0-RTT connect", controller.get_client_0rtt(&addr))
        .await
        .unwrap();
    let (status, actuate) = tokio::join!(client.call("status", &()), client.call("actuate", &()));
    assert_eq!(&status.unwrap()[..], b"ok");
    assert_eq!(&actuate.unwrap()[..], b"1");
    let stats = second.stats();
    assert_eq!(
        (stats.early_served, stats.too_early),
        (0, 0),
        "nothing ran from rejected early data: {stats:?}"
    );
    assert_eq!(actuated.load(Ordering::SeqCst), 1);
    within("ping", client.ping()).await.unwrap();
}

#[tokio::test]
async fn without_a_ticket_0rtt_is_a_full_handshake() {
    let identity = Identity::self_signed(&[]).unwrap();
    let fp = identity.fingerprint();
    let gw = gateway(identity, "127.0.0.1:0", Arc::default()).await;
    let controller = slow_controller(fp);
    let client = within(
        "connect",
        controller.get_client_0rtt(&gw.local_addr().to_string()),
    )
    .await
    .unwrap();
    assert_eq!(
        &within("actuate", client.call("actuate", &()))
            .await
            .unwrap()[..],
        b"1"
    );
    assert_eq!(gw.stats().too_early, 0);
}

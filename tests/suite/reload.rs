//! Reloading a running gateway's certificate, client CA and permissions.

use std::path::Path;

use crate::harness::spawn_gateway;
use quicswarm::{
    tls::{self, certs_init},
    Allow, CallError, ConnectError, Fingerprint, Gateway, GatewayError, Identity, Permissions,
    Trust,
};
use quicswarm_tests::{controller, within, TestGateway};

/// A client of `gw` from a controller that trusts only `fingerprint`.
async fn pinned(
    gw: &TestGateway,
    fingerprint: Fingerprint,
    what: &str,
) -> Result<quicswarm::Client, ConnectError> {
    within(
        what,
        controller(Trust::Fingerprints(vec![fingerprint])).get_client(&gw.addr),
    )
    .await
}

/// Replaces the certificate and key in `dir` with a new self-signed pair; returns its
/// fingerprint.
fn new_certificate(dir: &Path) -> Fingerprint {
    let fresh = tempfile::tempdir().unwrap();
    let (identity, created) = Identity::load_or_create(fresh.path()).unwrap();
    assert!(created);
    for file in ["gateway.pem", "gateway.key"] {
        std::fs::copy(fresh.path().join(file), dir.join(file)).unwrap();
    }
    identity.fingerprint()
}

#[tokio::test]
async fn a_reload_serves_the_new_certificate_and_old_connections_carry_on() {
    let certs = tempfile::tempdir().unwrap();
    let dir = certs.path().to_path_buf();
    let gw = spawn_gateway(move |b| b.cert_dir(dir)).await;
    let old = gw.gateway.fingerprint();
    let before = pinned(&gw, old, "connect before").await.unwrap();
    within("ping before", before.ping()).await.unwrap();

    let new = new_certificate(certs.path());
    assert_ne!(new, old);
    let served = within("reload", gw.gateway.reload()).await.unwrap();
    assert_eq!(served, new);
    assert_eq!(gw.gateway.fingerprint(), new);

    let after = pinned(&gw, new, "connect pinned to the new certificate")
        .await
        .unwrap();
    within("ping after", after.ping()).await.unwrap();
    match pinned(&gw, old, "connect pinned to the old certificate").await {
        Err(ConnectError::FingerprintMismatch {
            expected, actual, ..
        }) => assert_eq!((expected, actual), (old, new)),
        other => panic!("expected FingerprintMismatch, got {other:?}"),
    }
    // The connection made before the reload goes on working.
    within("ping on the old connection", before.ping())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_reload_that_fails_keeps_the_gateway_serving_as_before() {
    let certs = tempfile::tempdir().unwrap();
    let dir = certs.path().to_path_buf();
    let gw = spawn_gateway(move |b| b.cert_dir(dir)).await;
    let old = gw.gateway.fingerprint();
    std::fs::write(certs.path().join("gateway.pem"), "not a certificate").unwrap();

    let failed = within("reload", gw.gateway.reload()).await;
    assert!(matches!(failed, Err(GatewayError::Tls(_))), "{failed:?}");
    assert_eq!(gw.gateway.fingerprint(), old);

    // A certificate folder emptied by mistake: an error too, not a new identity generated
    // that no controller has pinned.
    for file in ["gateway.pem", "gateway.key"] {
        std::fs::remove_file(certs.path().join(file)).unwrap();
    }
    let failed = within("reload from an empty folder", gw.gateway.reload()).await;
    assert!(matches!(failed, Err(GatewayError::Tls(_))), "{failed:?}");
    assert!(
        !certs.path().join("gateway.pem").exists(),
        "nothing generated"
    );
    assert_eq!(gw.gateway.fingerprint(), old);
    let client = pinned(&gw, old, "connect after the failed reload")
        .await
        .unwrap();
    within("ping", client.ping()).await.unwrap();
}

#[tokio::test]
async fn reload_from_changes_permissions_for_the_next_request_of_a_live_connection() {
    let certs = tempfile::tempdir().unwrap();
    let dir = certs.path().to_path_buf();
    // Any subroutine but the one the test calls.
    let mut narrow = Permissions::none();
    narrow.subroutines = Allow::only(["byte_sum"]);
    let only_sum = narrow.clone();
    let gw = spawn_gateway(move |b| b.cert_dir(dir).default_permissions(narrow)).await;
    let client = pinned(&gw, gw.gateway.fingerprint(), "connect")
        .await
        .unwrap();
    let denied = within("echo before", client.call("echo", "hi")).await;
    assert!(
        matches!(denied, Err(CallError::PermissionDenied(_))),
        "{denied:?}"
    );

    let wider = Gateway::builder()
        .cert_dir(certs.path())
        .default_permissions(Permissions::all_but_close());
    let served = within("reload", gw.gateway.reload_from(&wider))
        .await
        .unwrap();
    assert_eq!(served, gw.gateway.fingerprint(), "same certificate");
    within("echo after", client.call("echo", "hi"))
        .await
        .unwrap();

    // And back: a right taken away is gone for the next request.
    let narrower = Gateway::builder()
        .cert_dir(certs.path())
        .default_permissions(only_sum);
    within("reload again", gw.gateway.reload_from(&narrower))
        .await
        .unwrap();
    let denied = within("echo at last", client.call("echo", "hi")).await;
    assert!(
        matches!(denied, Err(CallError::PermissionDenied(_))),
        "{denied:?}"
    );
}

#[tokio::test]
async fn a_reload_reads_the_client_ca_file_again() {
    let pki = tempfile::tempdir().unwrap();
    let first = certs_init(pki.path(), &[]).unwrap();
    tls::certs_client(pki.path(), "robot").unwrap();
    let second_dir = tempfile::tempdir().unwrap();
    let second = certs_init(second_dir.path(), &[]).unwrap();
    tls::certs_client(second_dir.path(), "robot").unwrap();

    let ca_file = pki.path().join("client-ca.pem");
    std::fs::copy(&first.ca_cert, &ca_file).unwrap();
    let (dir, ca) = (pki.path().to_path_buf(), ca_file.clone());
    let gw = spawn_gateway(move |b| b.cert_dir(dir).client_ca_file(ca)).await;
    let dial = |client_dir: &Path| {
        let mut config =
            quicswarm::ControllerConfig::with_trust(Trust::ca_file(&first.ca_cert).unwrap());
        config.identity = Some(
            Identity::from_pem_files(&client_dir.join("robot.pem"), &client_dir.join("robot.key"))
                .unwrap(),
        );
        config.connect_timeout = std::time::Duration::from_secs(5);
        quicswarm::Controller::new(config).unwrap()
    };

    let by_first = within("first CA's client", dial(pki.path()).get_client(&gw.addr))
        .await
        .unwrap();
    within("ping", by_first.ping()).await.unwrap();
    let refused = within(
        "second CA's client",
        dial(second_dir.path()).get_client(&gw.addr),
    )
    .await;
    assert!(refused.is_err(), "the second CA is not trusted yet");

    std::fs::copy(&second.ca_cert, &ca_file).unwrap();
    within("reload", gw.gateway.reload()).await.unwrap();
    let by_second = within(
        "second CA's client after the reload",
        dial(second_dir.path()).get_client(&gw.addr),
    )
    .await
    .unwrap();
    within("ping", by_second.ping()).await.unwrap();
    within("ping on the first CA's connection", by_first.ping())
        .await
        .unwrap();
}

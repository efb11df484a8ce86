//! Trust: pinned fingerprints, trust on first use, a private CA.

use quicswarm::{
    tls::{self, certs_init},
    ConnectError, Identity, Trust,
};
use quicswarm_tests::{controller, spawn_gateway, within};

#[tokio::test]
async fn trust_on_first_use_pins_and_later_mismatch_is_refused() {
    let gw = spawn_gateway(|b| b).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("known_gateways");
    let tofu = controller(Trust::KnownGateways(file.clone()));

    let client = within("first use", tofu.get_client(&gw.addr))
        .await
        .unwrap();
    within("ping", client.ping()).await.unwrap();
    assert_eq!(
        tls::known_gateway(&file, &gw.addr).unwrap(),
        Some(gw.fingerprint)
    );
    let again = within("second use", tofu.get_client(&gw.addr))
        .await
        .unwrap();
    within("ping", again.ping()).await.unwrap();

    // Another gateway key for the same address: hard error naming both, no re-pin.
    let other = Identity::self_signed(&[]).unwrap().fingerprint();
    let file2 = dir.path().join("known_other");
    tls::pin_gateway(&file2, &gw.addr, other).unwrap();
    let before = std::fs::read(&file2).unwrap();
    let strict = controller(Trust::KnownGateways(file2.clone()));
    match within("mismatch", strict.get_client(&gw.addr)).await {
        Err(ConnectError::FingerprintMismatch {
            expected, actual, ..
        }) => {
            assert_eq!(expected, other);
            assert_eq!(actual, gw.fingerprint);
            let text = ConnectError::FingerprintMismatch {
                gateway: gw.addr.clone(),
                expected,
                actual,
            }
            .to_string();
            assert!(
                text.contains(&expected.to_string()) && text.contains(&actual.to_string()),
                "{text}"
            );
        }
        other => panic!("expected FingerprintMismatch, got {other:?}"),
    }
    assert_eq!(
        std::fs::read(&file2).unwrap(),
        before,
        "the pin must not change"
    );
}

#[tokio::test]
async fn wrong_pinned_fingerprint_is_refused() {
    let gw = spawn_gateway(|b| b).await;
    let wrong = Identity::self_signed(&[]).unwrap().fingerprint();
    let c = controller(Trust::Fingerprints(vec![wrong]));
    assert!(matches!(
        within("connect", c.get_client(&gw.addr)).await,
        Err(ConnectError::FingerprintMismatch { .. })
    ));
    // The gateway is unaffected.
    let ok = within("connect", gw.controller().get_client(&gw.addr))
        .await
        .unwrap();
    within("ping", ok.ping()).await.unwrap();
}

#[tokio::test]
async fn private_ca_trust() {
    let dir = tempfile::tempdir().unwrap();
    let made = certs_init(dir.path(), &[]).unwrap();
    let gw = spawn_gateway(|b| b.cert_dir(dir.path())).await;
    assert_eq!(
        gw.gateway.fingerprint(),
        made.gateway_fingerprint,
        "the gateway uses the CA-issued cert"
    );
    assert!(!gw.gateway.generated_identity());
    let trust = Trust::ca_file(&made.ca_cert).unwrap();
    let client = within(
        "connect via CA",
        controller(trust.clone()).get_client(&gw.addr),
    )
    .await
    .unwrap();
    within("ping", client.ping()).await.unwrap();

    // A self-signed gateway is not trusted by the CA.
    let stranger = spawn_gateway(|b| b).await;
    match within(
        "connect stranger",
        controller(trust).get_client(&stranger.addr),
    )
    .await
    {
        Err(ConnectError::Connection { source, .. }) => {
            assert!(
                source.to_string().to_lowercase().contains("certificate"),
                "{source}"
            )
        }
        other => panic!("expected a TLS failure, got {other:?}"),
    }
}

#[tokio::test]
async fn cert_dir_generates_once_and_keeps_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let first = spawn_gateway(|b| b.cert_dir(dir.path())).await;
    assert!(first.gateway.generated_identity());
    let fp = first.gateway.fingerprint();
    drop(first);
    let second = spawn_gateway(|b| b.cert_dir(dir.path())).await;
    assert!(!second.gateway.generated_identity());
    assert_eq!(second.gateway.fingerprint(), fp);
}

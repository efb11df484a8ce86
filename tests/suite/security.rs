//! Trust: pinned fingerprints, trust on first use, a private CA.

use crate::harness::spawn_gateway;
use quicswarm::{
    tls::{self, certs_init},
    ConnectError, Identity, Trust,
};
use quicswarm_tests::{controller, within};

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
        tls::known_gateway(&file, gw.label()).unwrap(),
        Some(gw.fingerprint)
    );
    let again = within("second use", tofu.get_client(&gw.addr))
        .await
        .unwrap();
    within("ping", again.ping()).await.unwrap();

    // Another gateway key for the same address: hard error naming both, no re-pin.
    let other = Identity::self_signed(&[]).unwrap().fingerprint();
    let file2 = dir.path().join("known_other");
    tls::pin_gateway(&file2, gw.label(), other).unwrap();
    let before = std::fs::read(&file2).unwrap();
    let strict = controller(Trust::KnownGateways(file2.clone()));
    match within("mismatch", strict.get_client(&gw.addr)).await {
        Err(ConnectError::FingerprintMismatch {
            expected, actual, ..
        }) => {
            assert_eq!(expected, other);
            assert_eq!(actual, gw.fingerprint);
            let text = ConnectError::FingerprintMismatch {
                gateway: gw.label().to_string(),
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
    let ok = gw.client().await;
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
        Err(e) if handshake_failure(&e).is_some() => {
            let text = handshake_failure(&e).unwrap_or_default();
            assert!(text.to_lowercase().contains("certificate"), "{text}")
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

fn client_identity(dir: &std::path::Path, name: &str) -> Identity {
    Identity::from_pem_files(
        &dir.join(format!("{name}.pem")),
        &dir.join(format!("{name}.key")),
    )
    .unwrap()
}

fn mtls_controller(ca: &std::path::Path, identity: Option<Identity>) -> quicswarm::Controller {
    let mut config = quicswarm::ControllerConfig::with_trust(Trust::ca_file(ca).unwrap());
    config.identity = identity;
    config.connect_timeout = std::time::Duration::from_secs(5);
    quicswarm::Controller::new(config).unwrap()
}

#[tokio::test]
async fn mutual_tls_refuses_clients_without_a_certificate_from_the_ca() {
    let pki = tempfile::tempdir().unwrap();
    let made = certs_init(pki.path(), &[]).unwrap();
    let client_ca = tls::load_certs(&made.ca_cert).unwrap();
    let pki_dir = pki.path().to_path_buf();
    let gw = spawn_gateway(move |b| b.cert_dir(pki_dir).client_ca(client_ca)).await;
    let ca = made.ca_cert.clone();
    let dir = ca.parent().unwrap().to_path_buf();

    let ok = within(
        "with a certificate",
        mtls_controller(&ca, Some(client_identity(&dir, "client"))).get_client(&gw.addr),
    )
    .await
    .unwrap();
    within("ping", ok.ping()).await.unwrap();

    let none = within(
        "without a certificate",
        mtls_controller(&ca, None).get_client(&gw.addr),
    )
    .await;
    assert!(
        none.as_ref().err().and_then(handshake_failure).is_some(),
        "{none:?}"
    );

    let other = tempfile::tempdir().unwrap();
    certs_init(other.path(), &[]).unwrap();
    let stranger = within(
        "a certificate from another CA",
        mtls_controller(&ca, Some(client_identity(other.path(), "client"))).get_client(&gw.addr),
    )
    .await;
    assert!(
        stranger
            .as_ref()
            .err()
            .and_then(handshake_failure)
            .is_some(),
        "{stranger:?}"
    );
    within("ping still", ok.ping()).await.unwrap();
}

#[tokio::test]
async fn permissions_follow_the_client_certificate_name() {
    use quicswarm::{files::Selector, Allow, CallError, Permissions};
    let pki = tempfile::tempdir().unwrap();
    let made = certs_init(pki.path(), &[]).unwrap();
    tls::certs_client(pki.path(), "viewer").unwrap();
    let dir = pki.path().to_path_buf();
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("a.log"), b"log").unwrap();
    let mut viewer = Permissions::none();
    viewer.subroutines = Allow::only(["echo"]);
    let (client_ca, d, cd) = (
        tls::load_certs(&made.ca_cert).unwrap(),
        data.path().to_path_buf(),
        dir.clone(),
    );
    let gw = spawn_gateway(move |b| {
        b.cert_dir(cd)
            .client_ca(client_ca)
            .serve("logs", d)
            .permissions("viewer", viewer)
    })
    .await;

    let v = within(
        "viewer",
        mtls_controller(&made.ca_cert, Some(client_identity(&dir, "viewer"))).get_client(&gw.addr),
    )
    .await
    .unwrap();
    assert_eq!(
        &within("echo", v.call("echo", "hi")).await.unwrap()[..],
        b"hi"
    );
    match within(
        "counter",
        v.stream(
            "counter",
            &quicswarm::demo::CounterArgs { count: 1, size: 1 },
        ),
    )
    .await
    {
        Err(CallError::PermissionDenied(m)) => {
            assert!(m.contains("viewer") && m.contains("counter"), "{m}")
        }
        other => panic!("expected PermissionDenied, got {other:?}"),
    }
    assert!(matches!(
        v.send("byte_sum", &(), vec![1u8; 10]).await,
        Err(CallError::PermissionDenied(_))
    ));
    match within("list", v.list("logs", &Selector::all())).await {
        Err(CallError::PermissionDenied(m)) => assert!(m.contains("logs"), "{m}"),
        other => panic!("expected PermissionDenied, got {other:?}"),
    }
    within("ping", v.ping()).await.unwrap();

    // Another identity gets the defaults: everything but close_gateway.
    let c = within(
        "client",
        mtls_controller(&made.ca_cert, Some(client_identity(&dir, "client"))).get_client(&gw.addr),
    )
    .await
    .unwrap();
    assert_eq!(
        within("list", c.list("logs", &Selector::all()))
            .await
            .unwrap()
            .entries
            .len(),
        1
    );
    assert!(matches!(
        c.close_gateway().await,
        Err(CallError::PermissionDenied(_))
    ));
}

/// The text of a failed handshake: a QUIC connection error, or a TCP/TLS one.
fn handshake_failure(e: &ConnectError) -> Option<String> {
    match e {
        ConnectError::Connection { source, .. } => Some(source.to_string()),
        ConnectError::Tcp { source, .. } => Some(source.to_string()),
        _ => None,
    }
}

/// Issues a client certificate from the CA in `dir`, adjusted by `tweak`, and loads it.
fn issue(
    dir: &std::path::Path,
    name: &str,
    tweak: impl FnOnce(&mut rcgen::CertificateParams),
) -> Identity {
    let ca_pem = std::fs::read_to_string(dir.join("ca.pem")).unwrap();
    let ca_key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(dir.join("ca.key")).unwrap()).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, ca_key).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    tweak(&mut params);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    client_identity(dir, name)
}

/// A client certificate from the right CA is still refused when it has expired, or when it
/// is made for servers only.
#[tokio::test]
async fn expired_or_server_only_client_certificates_are_refused() {
    let pki = tempfile::tempdir().unwrap();
    let made = certs_init(pki.path(), &[]).unwrap();
    let client_ca = tls::load_certs(&made.ca_cert).unwrap();
    let pki_dir = pki.path().to_path_buf();
    let gw = spawn_gateway(move |b| b.cert_dir(pki_dir).client_ca(client_ca)).await;
    let dir = pki.path();

    let fresh = issue(dir, "fresh", |_| {});
    let ok = within(
        "a valid certificate",
        mtls_controller(&made.ca_cert, Some(fresh)).get_client(&gw.addr),
    )
    .await
    .unwrap();
    within("ping", ok.ping()).await.unwrap();

    let expired = issue(dir, "expired", |p| {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    });
    let server_only = issue(dir, "server-only", |p| {
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    });
    for (what, identity) in [("expired", expired), ("server-only", server_only)] {
        let refused = within(
            what,
            mtls_controller(&made.ca_cert, Some(identity)).get_client(&gw.addr),
        )
        .await;
        assert!(
            refused.as_ref().err().and_then(handshake_failure).is_some(),
            "{what}: {refused:?}"
        );
    }
    within("ping still", ok.ping()).await.unwrap();
}

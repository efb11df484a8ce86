//! Fleets: one operation on many gateways, each with its own result.

use std::{collections::HashMap, path::Path, time::Duration};

use bytes::Bytes;
use futures_util::StreamExt;

use crate::harness::spawn_gateway;
use quicswarm::{
    demo::CounterArgs,
    files::{Selector, TransferOptions},
    fleet::{Fleet, FleetError, FleetItem, FleetOptions, FleetResult, Member},
    CallError, ConnectError, Controller, ControllerConfig, Identity, Trust,
};
use quicswarm_tests::{within, TestGateway};

/// A controller whose trust accepts nothing by itself: every member is pinned by the fleet.
fn controller(connect_timeout: Duration) -> Controller {
    let nobody = Identity::self_signed(&[]).unwrap().fingerprint();
    let mut config = ControllerConfig::with_trust(Trust::Fingerprints(vec![nobody]));
    config.connect_timeout = connect_timeout;
    config.bind = Some("127.0.0.1:0".parse().unwrap());
    Controller::new(config).unwrap()
}

fn member(name: &str, gw: &TestGateway) -> Member {
    Member::new(name, gw.addr.clone(), Some(gw.fingerprint)).unwrap()
}

/// Every result of a fleet operation, by gateway name, in arrival order too.
async fn collect<T>(
    results: impl futures_util::Stream<Item = FleetResult<T>>,
) -> (Vec<String>, HashMap<String, FleetResult<T>>) {
    let all: Vec<FleetResult<T>> = within("fleet operation", results.collect()).await;
    let order = all.iter().map(|r| r.gateway.to_string()).collect();
    (
        order,
        all.into_iter()
            .map(|r| (r.gateway.to_string(), r))
            .collect(),
    )
}

#[tokio::test]
async fn a_dead_or_untrusted_gateway_fails_alone_and_last() {
    let (a, b) = (spawn_gateway(|b| b).await, spawn_gateway(|b| b).await);
    // An address nobody answers on: a UDP port bound, then released.
    let dead = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap().to_string();
    drop(dead);
    let stranger = Identity::self_signed(&[]).unwrap().fingerprint();
    let members = vec![
        Member::new("dead", dead_addr, Some(a.fingerprint)).unwrap(),
        member("a", &a),
        Member::new("impostor", b.addr.clone(), Some(stranger)).unwrap(),
        member("b", &b),
    ];
    let fleet = Fleet::new(controller(Duration::from_secs(2)), members).unwrap();
    let (order, results) = collect(fleet.ping()).await;

    assert!(results["a"].result.is_ok() && results["b"].result.is_ok());
    assert!(
        matches!(
            results["impostor"].result,
            Err(FleetError::Connect(ConnectError::FingerprintMismatch { actual, .. })) if actual == b.fingerprint
        ),
        "{:?}",
        results["impostor"].result
    );
    assert!(
        matches!(
            results["dead"].result,
            Err(FleetError::Connect(ConnectError::Timeout { .. }))
        ),
        "{:?}",
        results["dead"].result
    );
    // Listed first, it still did not hold the others back: they answered while it waited.
    assert_eq!(order.last().map(String::as_str), Some("dead"), "{order:?}");
    assert!(results["a"].elapsed < results["dead"].elapsed);
}

#[tokio::test]
async fn call_send_and_stream_on_every_gateway() {
    let gws = [
        spawn_gateway(|b| b).await,
        spawn_gateway(|b| b).await,
        spawn_gateway(|b| b).await,
    ];
    // The third lacks `echo`.
    gws[2].gateway.registry().remove("echo");
    let members = ["r0", "r1", "r2"]
        .iter()
        .zip(&gws)
        .map(|(n, g)| member(n, g))
        .collect();
    let fleet = Fleet::new(controller(Duration::from_secs(10)), members)
        .unwrap()
        .with_options(FleetOptions {
            concurrency: 2,
            ..FleetOptions::default()
        });

    let (_, calls) = collect(fleet.call("echo", "hi")).await;
    for name in ["r0", "r1"] {
        assert_eq!(calls[name].result.as_ref().unwrap(), &Bytes::from("hi"));
    }
    assert!(
        matches!(
            calls["r2"].result,
            Err(FleetError::Call(CallError::UnknownSubroutine(_)))
        ),
        "{:?}",
        calls["r2"].result
    );

    let (_, sums) = collect(fleet.send("byte_sum", &(), Bytes::from(vec![2u8; 1000]))).await;
    assert!(sums.values().all(|r| *r.result.as_ref().unwrap() == 2000));

    let args = CounterArgs {
        count: 50,
        size: 16,
    };
    let items: Vec<FleetItem> =
        within("fleet stream", fleet.stream("counter", &args).collect()).await;
    let mut per_gateway: HashMap<String, Vec<i64>> = HashMap::new();
    let mut ended = HashMap::new();
    for item in items {
        match item {
            FleetItem::Item {
                gateway,
                ident,
                data,
            } => {
                assert_eq!(data.len(), 16);
                per_gateway
                    .entry(gateway.to_string())
                    .or_default()
                    .push(ident);
            }
            FleetItem::Ended { gateway, result } => {
                assert!(
                    !ended.contains_key(&gateway.to_string()),
                    "one end per gateway"
                );
                ended.insert(gateway.to_string(), result.unwrap());
            }
            other => panic!("{other:?}"),
        }
    }
    for name in ["r0", "r1", "r2"] {
        assert_eq!(per_gateway[name], (0..50).collect::<Vec<_>>(), "{name}");
        assert_eq!(ended[name], 50);
    }
}

fn write_files(root: &Path, n: usize, tag: &str) {
    for i in 0..n {
        let dir = root.join(format!("d{}", i % 3));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("f{i}.log")), format!("{tag} file {i}")).unwrap();
    }
}

#[tokio::test]
async fn a_fleet_download_fills_a_folder_per_gateway_and_resumes() {
    let roots = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    write_files(roots[0].path(), 20, "alpha");
    write_files(roots[1].path(), 30, "beta");
    let (r0, r1) = (roots[0].path().to_path_buf(), roots[1].path().to_path_buf());
    let gws = [
        spawn_gateway(move |b| b.serve("logs", r0)).await,
        spawn_gateway(move |b| b.serve("logs", r1)).await,
    ];
    let fleet = Fleet::new(
        controller(Duration::from_secs(10)),
        vec![member("alpha", &gws[0]), member("beta", &gws[1])],
    )
    .unwrap();
    let dest = tempfile::tempdir().unwrap();
    let options = TransferOptions::default();

    let (_, first) = collect(fleet.download("logs", &Selector::all(), dest.path(), &options)).await;
    assert_eq!(first["alpha"].result.as_ref().unwrap().files, 20);
    assert_eq!(first["beta"].result.as_ref().unwrap().files, 30);
    assert_eq!(
        std::fs::read_to_string(dest.path().join("beta/d2/f29.log")).unwrap(),
        "beta file 29"
    );
    assert_eq!(
        std::fs::read_to_string(dest.path().join("alpha/d0/f0.log")).unwrap(),
        "alpha file 0"
    );

    // One file lost on one side: the second run moves only that one.
    std::fs::remove_file(dest.path().join("alpha/d1/f4.log")).unwrap();
    let (_, again) = collect(fleet.download("logs", &Selector::all(), dest.path(), &options)).await;
    let (alpha, beta) = (
        again["alpha"].result.as_ref().unwrap(),
        again["beta"].result.as_ref().unwrap(),
    );
    assert_eq!((alpha.files, alpha.skipped), (1, 19));
    assert_eq!((beta.files, beta.skipped), (0, 30));
    assert!(dest.path().join("alpha/d1/f4.log").exists());

    let (_, listed) = collect(fleet.list("logs", &Selector::all())).await;
    assert_eq!(listed["beta"].result.as_ref().unwrap().entries.len(), 30);
}

#[tokio::test]
async fn a_fleet_upload_reaches_every_gateway_and_a_refusing_one_says_so() {
    let uploads = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let u0 = uploads[0].path().to_path_buf();
    let gws = [
        spawn_gateway(move |b| b.upload_dir(u0)).await,
        // No upload folder: uploads are refused.
        spawn_gateway(|b| b).await,
    ];
    let fleet = Fleet::new(
        controller(Duration::from_secs(10)),
        vec![member("takes", &gws[0]), member("refuses", &gws[1])],
    )
    .unwrap();
    let source = tempfile::tempdir().unwrap();
    let map = source.path().join("map.bin");
    std::fs::write(&map, vec![7u8; 10_000]).unwrap();
    let (_, done) = collect(fleet.upload(&[map], "maps", &TransferOptions::default())).await;
    assert_eq!(done["takes"].result.as_ref().unwrap().files, 1);
    assert_eq!(
        std::fs::read(uploads[0].path().join("maps/map.bin")).unwrap(),
        vec![7u8; 10_000]
    );
    assert!(
        matches!(
            done["refuses"].result,
            Err(FleetError::Transfer(_)) | Err(FleetError::Call(CallError::PermissionDenied(_)))
        ),
        "{:?}",
        done["refuses"].result
    );
}

#[tokio::test]
async fn a_fleet_timeout_bounds_each_gateway() {
    let slow = spawn_gateway(|b| b).await;
    slow.gateway.registry().batch("sleepy", |_: ()| async {
        tokio::time::sleep(Duration::from_secs(30)).await;
        Ok::<_, String>(Bytes::new())
    });
    let fleet = Fleet::new(
        controller(Duration::from_secs(10)),
        vec![member("slow", &slow)],
    )
    .unwrap()
    .with_options(FleetOptions {
        timeout: Some(Duration::from_millis(300)),
        ..FleetOptions::default()
    });
    let (_, done) = collect(fleet.call("sleepy", &())).await;
    assert!(
        matches!(done["slow"].result, Err(FleetError::Timeout(t)) if t == Duration::from_millis(300)),
        "{:?}",
        done["slow"].result
    );
}

//! hello: a gateway with one subroutine of each kind, and a controller that uses each.
//!
//! ```text
//! cargo run -p quicswarm-examples --bin hello
//! ```
//!
//! Both sides run in this one process on loopback; the two halves are written as they would
//! be in two programs (a robot's gateway and a laptop's controller).

use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use futures_util::stream;
use quicswarm::{
    Controller, ControllerConfig, Fingerprint, Gateway, Identity, Registry, SinkData, Trust,
};
use serde::{Deserialize, Serialize};

/// Arguments of the `readings` stream, shared by both sides.
#[derive(Serialize, Deserialize)]
struct Readings {
    sensor: String,
    count: i64,
}

/// The robot side: register subroutines and serve them.
async fn start_gateway() -> Result<(Gateway, Fingerprint)> {
    let registry = Registry::new();
    registry
        // batch: arguments in, bytes out.
        .batch("greet", |name: String| async move {
            Ok::<_, String>(format!("hello, {name}"))
        })
        // stream: (ident, bytes) items until done.
        .stream("readings", |args: Readings, _ctx| {
            stream::iter((0..args.count).map(move |i| {
                let value = format!("{}={:.2}", args.sensor, 20.0 + i as f64 * 0.1);
                Ok::<_, String>((i, Bytes::from(value)))
            }))
        })
        // sink: a byte buffer in, an integer out.
        .sink("store", |label: String, data: SinkData| async move {
            let bytes = data.collect().await.map_err(|e| e.to_string())?;
            println!("[gateway] stored {} bytes labelled {label:?}", bytes.len());
            Ok::<_, String>(bytes.len() as i64)
        });

    // A real gateway would use `.cert_dir("certs")` and listen on 0.0.0.0:1857.
    let identity = Identity::self_signed(&[])?;
    let fingerprint = identity.fingerprint();
    let gateway = Gateway::builder()
        .listen("127.0.0.1:0".parse()?)
        .identity(identity)
        .registry(registry)
        .spawn()
        .await?;
    Ok((gateway, fingerprint))
}

/// The laptop side: connect and use each subroutine.
async fn run_controller(addr: &str, fingerprint: Fingerprint) -> Result<()> {
    // A real controller would use Trust::KnownGateways (trust on first use) or Trust::ca_file.
    let controller = Controller::new(ControllerConfig::with_trust(Trust::Fingerprints(vec![
        fingerprint,
    ])))?;
    let client = controller.get_client(addr).await.context("connecting")?;

    let rtt = client.ping().await?;
    println!("[controller] ping: {rtt:?}");

    let reply = client.call("greet", "robot").await?;
    println!("[controller] greet -> {}", String::from_utf8_lossy(&reply));

    let mut items = client
        .stream(
            "readings",
            &Readings {
                sensor: "temp".into(),
                count: 5,
            },
        )
        .await?;
    while let Some((ident, data)) = items.next().await? {
        println!(
            "[controller] reading {ident}: {}",
            String::from_utf8_lossy(&data)
        );
    }

    let stored = client.send("store", "snapshot", vec![7u8; 100_000]).await?;
    println!("[controller] store -> {stored}");

    client.close().await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let (gateway, fingerprint) = start_gateway().await?;
    println!(
        "[gateway] listening on {} ({fingerprint})",
        gateway.local_addr()
    );
    run_controller(&gateway.local_addr().to_string(), fingerprint).await?;
    gateway.shutdown(Duration::from_secs(1)).await;
    Ok(())
}

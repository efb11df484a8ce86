//! What every client command shares: how to trust and reach a gateway (`ClientOpts`), how
//! to end (`finish`), and how to report (`emit`).

use std::{path::PathBuf, time::Duration};

use anyhow::{Context, Result};
use clap::Args;
use quicswarm::{Client, Controller, ControllerConfig, Fingerprint, Trust};

/// Options shared by every client command.
#[derive(Args, Debug, Clone)]
pub(crate) struct ClientOpts {
    /// Trust-on-first-use pins (default: the user config dir + /quicswarm/known_gateways).
    #[arg(long, value_name = "FILE")]
    known_gateways: Option<PathBuf>,
    /// Trust gateways whose certificate chains to this CA instead of pinning.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["known_gateways", "fingerprint"])]
    ca: Option<PathBuf>,
    /// Accept only a gateway with this certificate fingerprint.
    #[arg(long, value_name = "SHA256", conflicts_with = "known_gateways")]
    fingerprint: Option<Fingerprint>,
    /// Client certificate (PEM) for gateways that require mutual TLS; with --key.
    #[arg(long, value_name = "FILE", requires = "key")]
    cert: Option<PathBuf>,
    /// Private key (PEM) of --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,
    /// Seconds to wait for a connection or an answer.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// Print exactly one JSON object on stdout, as the last line.
    #[arg(long)]
    pub(crate) json: bool,
    /// Write a qlog file per connection into this folder (open them in qvis).
    #[arg(long, value_name = "DIR")]
    qlog_dir: Option<PathBuf>,
}

impl ClientOpts {
    pub(crate) fn controller(&self) -> Result<Controller> {
        let trust = if let Some(ca) = &self.ca {
            Trust::ca_file(ca)?
        } else if let Some(fp) = self.fingerprint {
            Trust::Fingerprints(vec![fp])
        } else {
            Trust::KnownGateways(
                self.known_gateways
                    .clone()
                    .unwrap_or_else(Trust::default_known_gateways),
            )
        };
        let mut config = ControllerConfig::with_trust(trust);
        config.connect_timeout = Duration::from_secs(self.timeout);
        config.call_timeout = Some(Duration::from_secs(self.timeout));
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            config.identity = Some(quicswarm::Identity::from_pem_files(cert, key)?);
        }
        if let Some(dir) = &self.qlog_dir {
            qlog_dir(&mut config, dir)?;
        }
        Ok(Controller::new(config)?)
    }

    pub(crate) async fn connect(&self, addr: &str) -> Result<(Controller, Client)> {
        let controller = self.controller()?;
        let client = controller
            .get_client(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        Ok((controller, client))
    }
}

/// Closes the client politely whatever the command returned, so a failed command does not
/// hold a handler slot until the gateway's idle timeout.
pub(crate) async fn finish(
    controller: Controller,
    client: Client,
    result: Result<()>,
) -> Result<()> {
    let _ = client.close().await;
    controller.close().await;
    result
}

/// Prints `value` as the single JSON line in `--json` mode, otherwise runs `human`.
pub(crate) fn emit(opts: &ClientOpts, value: serde_json::Value, human: impl FnOnce()) {
    if opts.json {
        println!("{value}");
    } else {
        human();
    }
}

#[cfg(feature = "qlog")]
fn qlog_dir(config: &mut ControllerConfig, dir: &std::path::Path) -> Result<()> {
    config.qlog_dir = Some(dir.to_path_buf());
    Ok(())
}

#[cfg(not(feature = "qlog"))]
fn qlog_dir(_: &mut ControllerConfig, _: &std::path::Path) -> Result<()> {
    anyhow::bail!("--qlog-dir: this quicswarm was built without the qlog feature")
}

//! `quicswarm certs init` and `certs client`: a private CA and the certificates it issues.

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub(crate) enum CertsCommand {
    /// Make a private CA plus gateway and client certificates.
    Init {
        /// Where to write ca.pem, gateway.pem/.key, client.pem/.key.
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// Extra DNS names or IPs for the gateway certificate (localhost, 127.0.0.1 and ::1
        /// are always included).
        #[arg(long = "name")]
        names: Vec<String>,
    },
    /// Issue another client certificate from the CA made by `certs init`.
    Client {
        /// The client's name: its identity for the gateway's permissions.
        name: String,
        /// The folder holding ca.pem and ca.key; NAME.pem and NAME.key are written there.
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
    },
}

pub(crate) fn run(command: CertsCommand) -> Result<()> {
    match command {
        CertsCommand::Init { dir, names } => {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            let made = quicswarm::tls::certs_init(&dir, &names)?;
            println!("wrote CA {}", made.ca_cert.display());
            println!(
                "wrote gateway certificate {} ({})",
                made.gateway_cert.display(),
                made.gateway_fingerprint
            );
            println!("wrote client certificate {}", made.client_cert.display());
            println!("run: quicswarm gateway --cert-dir {}", dir.display());
            println!("then: quicswarm ping ADDR --ca {}", made.ca_cert.display());
            Ok(())
        }
        CertsCommand::Client { name, dir } => {
            let (cert, key) = quicswarm::tls::certs_client(&dir, &name)?;
            println!(
                "wrote client certificate {} and key {}",
                cert.display(),
                key.display()
            );
            println!(
                "use: quicswarm ping ADDR --ca {} --cert {} --key {}",
                dir.join("ca.pem").display(),
                cert.display(),
                key.display()
            );
            Ok(())
        }
    }
}

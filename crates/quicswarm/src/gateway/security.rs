//! What a reload replaces: the gateway's certificate, the CA its clients' certificates must
//! chain to, and the permissions.
//!
//! A [`Security`] is built whole from its [`SecuritySource`] (reading the files that source
//! names) and only then swapped in, so a reload that fails leaves the old one serving. New
//! connections shake hands with the new certificate and CA; connections already up carry on
//! with the TLS they shook hands with, and their next request is checked against the new
//! permissions (a revoked right takes effect at once). The rustls session cache is not carried
//! over: a client's first connection after a reload is a full handshake, never a resumption
//! that would skip the new certificate or CA.

use std::{collections::HashMap, path::PathBuf, sync::Arc};

use rustls::pki_types::CertificateDer;
use tracing::info;

use crate::{
    error::GatewayError,
    permissions::Permissions,
    tls::{Fingerprint, Identity, TlsError},
};

/// Where the gateway's certificate comes from.
#[derive(Debug, Clone)]
pub(super) enum IdentitySource {
    /// `gateway.pem`/`gateway.key` in this folder, generated self-signed on first start.
    CertDir(PathBuf),
    Given(Identity),
}

/// Where the CA of client certificates comes from (mutual TLS).
#[derive(Debug, Clone)]
pub(super) enum CaSource {
    Given(Vec<CertificateDer<'static>>),
    /// A PEM file, read again on every reload.
    File(PathBuf),
}

/// The builder's security settings, as given: what a reload reads again.
#[derive(Debug, Clone)]
pub(super) struct SecuritySource {
    pub(super) identity: IdentitySource,
    pub(super) client_ca: Option<CaSource>,
    pub(super) permissions: HashMap<String, Permissions>,
    pub(super) default_permissions: Permissions,
}

impl Default for SecuritySource {
    fn default() -> Self {
        Self {
            identity: IdentitySource::CertDir(PathBuf::from("certs")),
            client_ca: None,
            permissions: HashMap::new(),
            default_permissions: Permissions::default(),
        }
    }
}

/// Why security is loaded: a missing certificate is generated at start only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum When {
    Start,
    Reload,
}

/// The loaded security of a gateway: its TLS configurations and permissions.
pub(crate) struct Security {
    pub(crate) fingerprint: Fingerprint,
    /// The endpoint's configuration (transport settings included).
    pub(super) quic: quinn::ServerConfig,
    /// TLS over TCP: the same certificate and CA, without early data.
    pub(super) tcp: tokio_rustls::TlsAcceptor,
    /// What this was loaded from (the permissions are its own): [`Gateway::reload`](super::Gateway::reload) reads it again.
    pub(super) source: SecuritySource,
}

impl Security {
    /// Loads `source` (reading its files off the runtime's threads) into configurations
    /// using `transport`. At `Start` a cert folder without a certificate gets a self-signed
    /// one (and the result says so); at `Reload` a missing certificate is an error, never a
    /// new identity that no controller has pinned.
    ///
    /// # Errors
    /// If a file cannot be read or parsed, or rustls refuses the certificate, key or CA.
    pub(super) async fn load(
        source: SecuritySource,
        transport: Arc<quinn::TransportConfig>,
        when: When,
    ) -> Result<(Self, bool), GatewayError> {
        tokio::task::spawn_blocking(move || Self::load_blocking(source, transport, when))
            .await
            .map_err(|e| {
                GatewayError::Tls(TlsError::Rustls(rustls::Error::General(format!(
                    "loading the identity: {e}"
                ))))
            })?
    }

    fn load_blocking(
        source: SecuritySource,
        transport: Arc<quinn::TransportConfig>,
        when: When,
    ) -> Result<(Self, bool), GatewayError> {
        let (identity, generated) = match &source.identity {
            IdentitySource::Given(id) => (id.clone(), false),
            IdentitySource::CertDir(dir) if when == When::Reload => {
                let (cert, key) = (dir.join("gateway.pem"), dir.join("gateway.key"));
                (Identity::from_pem_files(&cert, &key)?, false)
            }
            IdentitySource::CertDir(dir) => {
                let loaded = Identity::load_or_create(dir)?;
                if loaded.1 {
                    info!(dir = %dir.display(), "generated a self-signed gateway certificate");
                }
                loaded
            }
        };
        let client_ca = match &source.client_ca {
            None => None,
            Some(CaSource::Given(roots)) => Some(roots.clone()),
            Some(CaSource::File(path)) => Some(crate::tls::load_certs(path)?),
        };
        let tls = identity.server_config_with_client_ca(client_ca.as_deref())?;
        let mut quic = quinn::ServerConfig::with_crypto(Arc::new(
            quinn::crypto::rustls::QuicServerConfig::try_from(tls.clone())
                .map_err(|e| GatewayError::Tls(rustls::Error::General(e.to_string()).into()))?,
        ));
        quic.transport = transport;
        let security = Self {
            fingerprint: identity.fingerprint(),
            quic,
            tcp: tokio_rustls::TlsAcceptor::from(Arc::new(tcp_tls(tls))),
            source,
        };
        Ok((security, generated))
    }

    /// The permissions of a client.
    pub(crate) fn permissions_of(&self, identity: Option<&str>) -> &Permissions {
        identity
            .and_then(|id| self.source.permissions.get(id))
            .unwrap_or(&self.source.default_permissions)
    }
}

/// The TLS config of TLS-over-TCP connections: the QUIC one without early data. Over TCP
/// nothing checks whether a request arrived early (QUIC streams say so; a TLS stream does
/// not), so 0-RTT data, which an attacker can replay, is never accepted there.
fn tcp_tls(mut quic: rustls::ServerConfig) -> rustls::ServerConfig {
    quic.max_early_data_size = 0;
    quic
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_over_tcp_accepts_no_early_data() {
        let identity = Identity::self_signed(&[]).unwrap();
        let quic = identity.server_config().unwrap();
        assert!(quic.max_early_data_size > 0, "QUIC keeps 0-RTT");
        assert_eq!(tcp_tls(quic).max_early_data_size, 0);
    }

    #[tokio::test]
    async fn a_bad_client_ca_file_is_an_error_not_a_gateway_without_mutual_tls() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not a certificate").unwrap();
        let source = SecuritySource {
            identity: IdentitySource::Given(Identity::self_signed(&[]).unwrap()),
            client_ca: Some(CaSource::File(ca)),
            ..SecuritySource::default()
        };
        let transport = Arc::new(quinn::TransportConfig::default());
        let loaded = Security::load(source, transport, When::Start).await;
        assert!(
            matches!(loaded, Err(GatewayError::Tls(_))),
            "{:?}",
            loaded.err()
        );
    }
}

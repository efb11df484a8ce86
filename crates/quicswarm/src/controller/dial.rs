//! Whom a controller trusts: a private CA, pinned fingerprints, or trust on first use in a
//! known-gateways file. The TLS configs are made once per gateway and pin, and a gateway seen
//! for the first time is pinned after its handshake, in one place for every transport.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
};

use quicswarm_proto::ErrorCode;
use tracing::info;

use super::Controller;
use crate::{
    error::ConnectError,
    tls::{self, Fingerprint, PinRecord, PinVerifier, Trust},
    transport::Connection,
};

/// The TLS configs of one gateway: for QUIC, for TLS-over-TCP, and the pin record their
/// shared verifier fills in.
type TlsEntry = (
    Arc<quinn::crypto::rustls::QuicClientConfig>,
    Arc<rustls::ClientConfig>,
    Arc<Mutex<PinRecord>>,
);

pub(super) type TlsCache = std::collections::HashMap<(String, Option<Vec<Fingerprint>>), TlsEntry>;

/// How one dial trusts its gateway.
pub(super) struct Trusted {
    pub(super) quic: Arc<quinn::crypto::rustls::QuicClientConfig>,
    pub(super) tls: Arc<rustls::ClientConfig>,
    /// What the verifier saw.
    record: Arc<Mutex<PinRecord>>,
    /// The certificate this gateway must show, when one is known.
    expected: Option<Fingerprint>,
    /// The known-gateways file, when this gateway is not in it yet: what its handshake
    /// presents is pinned.
    first_use: Option<PathBuf>,
}

impl Trusted {
    /// For a failed handshake: a pinned gateway that showed another certificate.
    pub(super) fn mismatch(&self, label: &str) -> Option<ConnectError> {
        let seen = self.record.lock().ok().and_then(|r| r.seen);
        match (self.expected, seen) {
            (Some(expected), Some(actual)) if expected != actual => {
                Some(ConnectError::FingerprintMismatch {
                    gateway: label.to_string(),
                    expected,
                    actual,
                })
            }
            _ => None,
        }
    }
}

impl Controller {
    /// The trust for a dial of `label`: the configs to dial with and the pin to check (`pin`
    /// when the caller gives one, whatever the controller's trust).
    pub(super) async fn trust(
        &self,
        label: &str,
        pin: Option<Fingerprint>,
    ) -> Result<Trusted, ConnectError> {
        let (allowed, expected, first_use) = match &self.config.trust {
            _ if pin.is_some() => (pin.map(|fp| vec![fp]), pin, None),
            Trust::Ca(_) => (None, None, None),
            Trust::Fingerprints(allowed) => (Some(allowed.clone()), allowed.first().copied(), None),
            Trust::KnownGateways(file) => {
                let (f, l) = (file.clone(), label.to_string());
                let expected = blocking(move || tls::known_gateway(&f, &l)).await?;
                let first_use = expected.is_none().then(|| file.clone());
                (expected.map(|fp| vec![fp]), expected, first_use)
            }
        };
        let (quic, tls, record) = self.tls_for(label, allowed)?;
        Ok(Trusted {
            quic,
            tls,
            record,
            expected,
            first_use,
        })
    }

    /// Trust on first use: pins the certificate this connection's finished handshake
    /// presented, if the gateway was not pinned yet. Not the verifier's last sight: its record
    /// is shared by every connection to the gateway, and two first connections at once could
    /// swap what each saw.
    pub(super) async fn pin_if_first_use(
        &self,
        trusted: &Trusted,
        label: &str,
        conn: &Connection,
    ) -> Result<(), ConnectError> {
        let Some(file) = trusted.first_use.clone() else {
            return Ok(());
        };
        let presented = conn
            .peer_certificates()
            .and_then(|certs| certs.first().map(Fingerprint::of));
        match presented {
            Some(fp) => self.pin_first_use(file, label, fp, conn).await,
            None => Err(ConnectError::Tls(
                rustls::Error::NoCertificatesPresented.into(),
            )),
        }
    }

    /// The TLS config for a gateway, made once per gateway and pin: rustls resumes a session
    /// (and so allows 0-RTT) only with the very verifier that verified it.
    fn tls_for(
        &self,
        label: &str,
        allowed: Option<Vec<Fingerprint>>,
    ) -> Result<TlsEntry, ConnectError> {
        let key = (label.to_string(), allowed.clone());
        let mut cache = self
            .tls_cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(hit) = cache.get(&key) {
            return Ok(hit.clone());
        }
        let record = Arc::new(Mutex::new(PinRecord::default()));
        // A pin given for the dial wins over the CA.
        let verifier: Arc<dyn rustls::client::danger::ServerCertVerifier> = match &self.config.trust
        {
            Trust::Ca(roots) if allowed.is_none() => {
                tls::ca_verifier(roots).map_err(tls::TlsError::from)?
            }
            _ => self.pin_verifier(allowed, &record),
        };
        let tls = tls::client_config(verifier, &self.resumption, self.config.identity.as_ref())
            .map_err(tls::TlsError::from)?;
        let tls = Arc::new(tls);
        let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls.clone())
            .map_err(|e| tls::TlsError::from(rustls::Error::General(e.to_string())))?;
        let entry = (Arc::new(quic), tls, record);
        cache.insert(key, entry.clone());
        Ok(entry)
    }

    fn pin_verifier(
        &self,
        allowed: Option<Vec<Fingerprint>>,
        record: &Arc<Mutex<PinRecord>>,
    ) -> Arc<PinVerifier> {
        Arc::new(PinVerifier {
            allowed,
            record: record.clone(),
            algorithms: tls::provider().signature_verification_algorithms,
        })
    }

    /// Records a gateway seen for the first time. If another task pinned it meanwhile, the
    /// pin must match.
    async fn pin_first_use(
        &self,
        file: PathBuf,
        label: &str,
        fp: Fingerprint,
        conn: &Connection,
    ) -> Result<(), ConnectError> {
        let (lock, l) = (self.pin_lock.clone(), label.to_string());
        // File reads, writes and an fsync: off the runtime's workers.
        let pinned = blocking(move || {
            let _guard = lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            match tls::known_gateway(&file, &l)? {
                Some(expected) => Ok(Some(expected)),
                None => {
                    info!(gateway = %l, %fp, file = %file.display(), "pinned new gateway (trust on first use)");
                    tls::pin_gateway(&file, &l, fp)?;
                    Ok(None)
                }
            }
        })
        .await?;
        match pinned {
            Some(expected) if expected != fp => {
                conn.close(ErrorCode::NoError.to_u32(), b"untrusted");
                Err(ConnectError::FingerprintMismatch {
                    gateway: label.to_string(),
                    expected,
                    actual: fp,
                })
            }
            _ => Ok(()),
        }
    }
}

/// Runs file work for the trust store on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, tls::TlsError> + Send + 'static,
) -> Result<T, ConnectError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ConnectError::Io(std::io::Error::other(e)))?
        .map_err(ConnectError::from)
}

//! Whom a controller trusts: a private CA, pinned fingerprints, or a known-gateways file
//! (trust on first use), and the certificate verifier that checks pins.

use super::{io_err, provider, Fingerprint, TlsError};
use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use rustls::{
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::WebPkiSupportedAlgorithms,
    pki_types::{pem::PemObject, CertificateDer, ServerName, UnixTime},
    DigitallySignedStruct, SignatureScheme,
};

/// How a controller decides that a gateway is who it claims to be.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Trust {
    /// Trust on first use, pinned per gateway address in this file (one `ADDR FINGERPRINT`
    /// line per gateway). A changed certificate is refused with
    /// [`ConnectError::FingerprintMismatch`](crate::ConnectError::FingerprintMismatch).
    KnownGateways(PathBuf),
    /// Accept only gateways whose leaf certificate has one of these fingerprints.
    Fingerprints(Vec<Fingerprint>),
    /// Accept gateways whose certificate chains to one of these CA certificates and names the
    /// address dialled.
    Ca(Vec<CertificateDer<'static>>),
}

impl Trust {
    /// Trust the CA certificates in a PEM file.
    ///
    /// # Errors
    /// If the file cannot be read or holds no certificate.
    pub fn ca_file(path: &Path) -> Result<Self, TlsError> {
        load_certs(path).map(Self::Ca)
    }

    /// The default `known_gateways` file: `<config dir>/quicswarm/known_gateways`.
    pub fn default_known_gateways() -> PathBuf {
        dirs::config_dir()
            .unwrap_or_else(|| PathBuf::from("."))
            .join("quicswarm")
            .join("known_gateways")
    }
}

/// The certificates of a PEM file (at least one).
///
/// # Errors
/// If the file cannot be read or holds no certificate.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = fs::read(path).map_err(io_err("reading", path))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            what: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_path_buf(),
            what: "no certificate".into(),
        });
    }
    Ok(certs)
}

/// The fingerprint pinned for `gateway` in a `known_gateways` file, if any.
///
/// # Errors
/// If the file exists but cannot be read or has a malformed line for this gateway.
pub fn known_gateway(file: &Path, gateway: &str) -> Result<Option<Fingerprint>, TlsError> {
    let text = match fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(TlsError::Io {
                action: "reading",
                path: file.to_path_buf(),
                source: e,
            })
        }
    };
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.split_whitespace();
        if parts.next() == Some(gateway) {
            let fp = parts.next().unwrap_or_default();
            return fp.parse().map(Some);
        }
    }
    Ok(None)
}

/// Appends a pin for `gateway` to a `known_gateways` file, creating it if needed.
///
/// # Errors
/// If the file or its folder cannot be written.
pub fn pin_gateway(file: &Path, gateway: &str, fp: Fingerprint) -> Result<(), TlsError> {
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
    }
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .map_err(io_err("opening", file))?;
    writeln!(f, "{gateway} {fp}").map_err(io_err("writing", file))?;
    f.sync_all().map_err(io_err("syncing", file))
}

/// The outcome of pinned verification, read back by the controller after the handshake.
#[derive(Debug, Default)]
pub(crate) struct PinRecord {
    pub(crate) seen: Option<Fingerprint>,
}

/// Verifies a gateway by its certificate's fingerprint instead of a CA chain. The TLS 1.3
/// handshake signature is still checked, so the peer must hold the pinned certificate's key.
#[derive(Debug)]
pub(crate) struct PinVerifier {
    /// `None`: trust on first use (accept any, record it).
    pub(crate) allowed: Option<Vec<Fingerprint>>,
    pub(crate) record: Arc<Mutex<PinRecord>>,
    pub(crate) algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let fp = Fingerprint::of(end_entity);
        if let Ok(mut record) = self.record.lock() {
            record.seen = Some(fp);
        }
        match &self.allowed {
            Some(allowed) if !allowed.contains(&fp) => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            )),
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Only TLS 1.3 is offered.
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A CA-chain verifier over `roots`.
pub(crate) fn ca_verifier(
    roots: &[CertificateDer<'static>],
) -> Result<Arc<dyn ServerCertVerifier>, rustls::Error> {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add(root.clone())?;
    }
    rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider())
        .build()
        .map(|v| v as Arc<dyn ServerCertVerifier>)
        .map_err(|e| rustls::Error::General(e.to_string()))
}

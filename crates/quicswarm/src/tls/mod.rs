//! Identities, certificates and trust: rustls configs for both sides.
//!
//! A gateway proves itself with a certificate: either one issued by a private CA
//! ([`certs_init`] makes one) or a self-signed one generated on first start. A controller
//! trusts a gateway through one of the [`Trust`] modes: a CA file, a list of pinned SHA-256
//! fingerprints, or a `known_gateways` file (trust on first use, like SSH's `known_hosts`;
//! a later mismatch is a hard error naming both fingerprints, never a silent re-pin).
//!
//! `mod.rs` has identities and fingerprints; `trust.rs` the trust modes and the pin
//! verifier; `certs.rs` what `quicswarm certs` makes.

mod certs;
mod trust;

pub(crate) use self::trust::{ca_verifier, PinRecord, PinVerifier};
pub use self::{
    certs::{certs_client, certs_init, CertsInit},
    trust::{known_gateway, load_certs, pin_gateway, Trust},
};

use std::{
    fmt, fs,
    io::Write,
    path::{Path, PathBuf},
    str::FromStr,
    sync::Arc,
};

use rustls::{
    client::danger::ServerCertVerifier,
    crypto::CryptoProvider,
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
};

/// Names a generated gateway certificate is valid for, besides any the caller adds.
const DEFAULT_GATEWAY_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// Errors from loading, generating or storing certificates and keys.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// Reading or writing a file failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A PEM file held nothing usable.
    #[error("{path}: {what}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        what: String,
    },
    /// Certificate generation failed.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the configuration (for example a key that does not match the cert).
    #[error("TLS configuration refused: {0}")]
    Rustls(#[from] rustls::Error),
    /// A fingerprint string could not be parsed.
    #[error("bad fingerprint {0:?}: expected 64 hex digits, optionally prefixed `sha256:`")]
    BadFingerprint(String),
}

fn io_err<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> TlsError + 'a {
    move |source| TlsError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// The SHA-256 of a certificate's DER encoding: what `known_gateways` pins.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The fingerprint of `cert`.
    pub fn of(cert: &CertificateDer<'_>) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, cert.as_ref());
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        Self(out)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sha256:")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Fingerprint {
    type Err = TlsError;

    /// Accepts `sha256:` + 64 hex digits, with or without the prefix and `:` separators.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || TlsError::BadFingerprint(s.to_string());
        let body = s.trim();
        let body = body
            .strip_prefix("sha256:")
            .or_else(|| body.strip_prefix("SHA256:"))
            .unwrap_or(body);
        let hex: Vec<u8> = body.bytes().filter(|&c| c != b':').collect();
        if hex.len() != 64 {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, pair) in hex.chunks(2).enumerate() {
            let text = std::str::from_utf8(pair).map_err(|_| bad())?;
            out[i] = u8::from_str_radix(text, 16).map_err(|_| bad())?;
        }
        Ok(Self(out))
    }
}

/// A certificate chain and its private key.
#[derive(Debug)]
pub struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Self {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl Identity {
    /// A new self-signed identity valid for `localhost`, `127.0.0.1`, `::1` and `names`.
    /// Kept in memory only: handy for tests.
    ///
    /// # Errors
    /// If key generation fails.
    pub fn self_signed(names: &[&str]) -> Result<Self, TlsError> {
        let (cert_pem, key_pem) = self_signed_pem(names)?;
        Self::from_pem(
            cert_pem.as_bytes(),
            key_pem.as_bytes(),
            Path::new("<generated>"),
        )
    }

    /// Loads a PEM certificate chain and a PEM private key.
    ///
    /// # Errors
    /// If a file cannot be read or holds no certificate or key.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let cert_pem = fs::read(cert).map_err(io_err("reading", cert))?;
        let key_pem = fs::read(key).map_err(io_err("reading", key))?;
        Self::from_pem(&cert_pem, &key_pem, cert)
    }

    fn from_pem(cert_pem: &[u8], key_pem: &[u8], path: &Path) -> Result<Self, TlsError> {
        let pem_err = |what: String| TlsError::Pem {
            path: path.to_path_buf(),
            what,
        };
        let chain = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem_err(format!("bad certificate PEM: {e}")))?;
        if chain.is_empty() {
            return Err(pem_err("no certificate found".into()));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| pem_err(format!("bad private key PEM: {e}")))?;
        Ok(Self { chain, key })
    }

    /// Loads `gateway.pem` and `gateway.key` from `dir`, or generates a self-signed pair there
    /// on first use (the key file is written with mode 0600). Returns the identity and whether
    /// it was generated now.
    ///
    /// # Errors
    /// If the folder cannot be created or the files cannot be read or written.
    pub fn load_or_create(dir: &Path) -> Result<(Self, bool), TlsError> {
        let cert = dir.join("gateway.pem");
        let key = dir.join("gateway.key");
        if cert.exists() && key.exists() {
            return Ok((Self::from_pem_files(&cert, &key)?, false));
        }
        fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
        let (cert_pem, key_pem) = self_signed_pem(&[])?;
        write_private(&key, key_pem.as_bytes())?;
        write_atomic(&cert, cert_pem.as_bytes())?;
        Ok((Self::from_pem_files(&cert, &key)?, true))
    }

    /// The fingerprint of the leaf certificate: what controllers pin.
    pub fn fingerprint(&self) -> Fingerprint {
        // `from_pem` refuses an empty chain, so the leaf exists.
        self.chain
            .first()
            .map(Fingerprint::of)
            .unwrap_or(Fingerprint([0; 32]))
    }

    /// The rustls server configuration a gateway with this identity uses (TLS 1.3, ALPN
    /// `quicswarm/2`, early data enabled): for tools and tests that build their own endpoint.
    ///
    /// # Errors
    /// If rustls refuses the certificate or key.
    pub fn server_config(&self) -> Result<rustls::ServerConfig, TlsError> {
        self.server_config_with_client_ca(None)
    }

    /// Like [`server_config`](Self::server_config), requiring clients to present a
    /// certificate issued by one of `client_ca` (mutual TLS) when given.
    ///
    /// # Errors
    /// If rustls refuses the certificate, the key or the CA.
    pub fn server_config_with_client_ca(
        &self,
        client_ca: Option<&[CertificateDer<'static>]>,
    ) -> Result<rustls::ServerConfig, TlsError> {
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?;
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(roots) => {
                let mut store = rustls::RootCertStore::empty();
                for root in roots {
                    store.add(root.clone())?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(store),
                    provider(),
                )
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_single_cert(self.chain.clone(), self.key.clone_key())?;
        config.alpn_protocols = vec![quicswarm_proto::ALPN.to_vec()];
        // QUIC requires either 0 or u32::MAX; 0-RTT is gated per request by the gateway.
        config.max_early_data_size = u32::MAX;
        Ok(config)
    }
}

fn self_signed_pem(names: &[&str]) -> Result<(String, String), TlsError> {
    let mut all: Vec<String> = DEFAULT_GATEWAY_NAMES
        .iter()
        .map(|s| s.to_string())
        .collect();
    all.extend(names.iter().map(|s| s.to_string()));
    let mut params = rcgen::CertificateParams::new(all)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "quicswarm gateway");
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The ring provider: the one crypto backend this crate compiles in.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client config for one gateway with the given verifier, presenting `identity` to gateways
/// that ask for a client certificate.
pub(crate) fn client_config(
    verifier: Arc<dyn ServerCertVerifier>,
    resumption: &rustls::client::Resumption,
    identity: Option<&Identity>,
) -> Result<rustls::ClientConfig, rustls::Error> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match identity {
        Some(id) => builder.with_client_auth_cert(id.chain.clone(), id.key.clone_key())?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![quicswarm_proto::ALPN.to_vec()];
    config.enable_early_data = true;
    config.resumption = resumption.clone();
    Ok(config)
}

/// The name a certificate gives its holder: its subject's common name, else its first DNS
/// name. This is the identity permissions are granted to.
pub fn certificate_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    if let Some(cn) = parsed
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
    {
        return Some(cn.to_string());
    }
    let san = parsed.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|n| match n {
        x509_parser::extensions::GeneralName::DNSName(d) => Some((*d).to_string()),
        _ => None,
    })
}

/// Writes through a temporary file in the same folder, then renames: never a half-written
/// file under the final name.
fn write_atomic(path: &Path, data: &[u8]) -> Result<(), TlsError> {
    write_with_mode(path, data, 0o644)
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), TlsError> {
    write_with_mode(path, data, 0o600)
}

fn write_with_mode(path: &Path, data: &[u8], mode: u32) -> Result<(), TlsError> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    // A leftover of a crashed run goes first (a symlink is removed, not followed); then the
    // file is created exclusively and without following links, so a name planted meanwhile
    // fails the write instead of receiving the key.
    let _ = fs::remove_file(&tmp);
    let result = (|| {
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(mode)
                .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32);
        }
        #[cfg(not(unix))]
        let _ = mode;
        let mut f = opts.open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    result.map_err(|source| {
        let _ = fs::remove_file(&tmp);
        TlsError::Io {
            action: "writing",
            path: path.to_path_buf(),
            source,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::{ServerName, UnixTime};

    #[cfg(unix)]
    #[test]
    fn a_symlink_planted_as_the_key_temp_file_is_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("gateway.key");
        let victim = dir.path().join("victim");
        fs::write(&victim, b"keep me").unwrap();
        let tmp = key.with_extension(format!("tmp{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        write_private(&key, b"secret").unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"keep me");
        assert_eq!(fs::read(&key).unwrap(), b"secret");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn fingerprint_text_round_trips() {
        let id = Identity::self_signed(&[]).unwrap();
        let fp = id.fingerprint();
        let text = fp.to_string();
        assert!(text.starts_with("sha256:") && text.len() == 7 + 64);
        assert_eq!(text.parse::<Fingerprint>().unwrap(), fp);
        let colons: String = text.as_bytes()[7..]
            .chunks(2)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(colons.parse::<Fingerprint>().unwrap(), fp);
        assert!("sha256:abc".parse::<Fingerprint>().is_err());
    }

    #[test]
    fn load_or_create_keeps_the_identity() {
        let dir = tempfile::tempdir().unwrap();
        let (first, created) = Identity::load_or_create(dir.path()).unwrap();
        assert!(created);
        let (second, created) = Identity::load_or_create(dir.path()).unwrap();
        assert!(!created);
        assert_eq!(first.fingerprint(), second.fingerprint());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join("gateway.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn known_gateways_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sub/known");
        assert_eq!(known_gateway(&file, "a:1").unwrap(), None);
        let fp = Identity::self_signed(&[]).unwrap().fingerprint();
        pin_gateway(&file, "a:1", fp).unwrap();
        assert_eq!(known_gateway(&file, "a:1").unwrap(), Some(fp));
        assert_eq!(known_gateway(&file, "b:1").unwrap(), None);
    }

    #[test]
    fn certs_init_writes_a_usable_ca() {
        let dir = tempfile::tempdir().unwrap();
        let out = certs_init(dir.path(), &["robot.local"]).unwrap();
        let gw =
            Identity::from_pem_files(&out.gateway_cert, &dir.path().join("gateway.key")).unwrap();
        assert_eq!(gw.fingerprint(), out.gateway_fingerprint);
        gw.server_config().unwrap();
        let Trust::Ca(roots) = Trust::ca_file(&out.ca_cert).unwrap() else {
            panic!("not a CA")
        };
        let verifier = ca_verifier(&roots).unwrap();
        let name = ServerName::try_from("robot.local").unwrap();
        verifier
            .verify_server_cert(&gw.chain[0], &[], &name, &[], UnixTime::now())
            .expect("gateway cert chains to the CA");
        let other = ServerName::try_from("elsewhere.example").unwrap();
        assert!(verifier
            .verify_server_cert(&gw.chain[0], &[], &other, &[], UnixTime::now())
            .is_err());
    }
}

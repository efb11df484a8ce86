//! `quicswarm certs`: a private CA, a gateway certificate it signs, and client certificates
//! for mutual TLS.

use super::{io_err, write_atomic, write_private, Fingerprint, TlsError, DEFAULT_GATEWAY_NAMES};
use std::{
    fs,
    path::{Path, PathBuf},
};

/// Issues a client certificate named `name` from the private CA in `dir` (`ca.pem`, `ca.key`,
/// as written by [`certs_init`]): writes `NAME.pem` and `NAME.key` (mode 0600) there and
/// returns their paths.
///
/// # Errors
/// If the CA files are missing or unreadable, `name` is not a portable file name, or a file
/// cannot be written.
pub fn certs_client(dir: &Path, name: &str) -> Result<(PathBuf, PathBuf), TlsError> {
    if quicswarm_proto::path::validate(name).map(|p| p.len()) != Ok(1) {
        return Err(TlsError::Pem {
            path: dir.join(name),
            what: "not a portable file name".into(),
        });
    }
    let ca_pem =
        fs::read_to_string(dir.join("ca.pem")).map_err(io_err("reading", &dir.join("ca.pem")))?;
    let ca_key_pem =
        fs::read_to_string(dir.join("ca.key")).map_err(io_err("reading", &dir.join("ca.key")))?;
    let ca_key = rcgen::KeyPair::from_pem(&ca_key_pem)?;
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, ca_key)?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let key = rcgen::KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    let (cert_path, key_path) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    write_private(&key_path, key.serialize_pem().as_bytes())?;
    write_atomic(&cert_path, cert.pem().as_bytes())?;
    Ok((cert_path, key_path))
}

/// What [`certs_init`] wrote.
#[derive(Debug, Clone)]
pub struct CertsInit {
    /// The private CA certificate (give this to controllers: `Trust::ca_file`).
    pub ca_cert: PathBuf,
    /// The gateway certificate, signed by the CA.
    pub gateway_cert: PathBuf,
    /// A client certificate, signed by the CA (for mutual TLS).
    pub client_cert: PathBuf,
    /// The gateway certificate's fingerprint.
    pub gateway_fingerprint: Fingerprint,
}

/// Makes a private CA plus a gateway and a client certificate in `dir`: `ca.pem`/`ca.key`,
/// `gateway.pem`/`gateway.key` (valid for `localhost`, `127.0.0.1`, `::1` and
/// `gateway_names`), `client.pem`/`client.key`. Keys are written with mode 0600. Existing
/// files are replaced atomically.
///
/// # Errors
/// If generation fails or a file cannot be written.
pub fn certs_init(dir: &Path, gateway_names: &[&str]) -> Result<CertsInit, TlsError> {
    fs::create_dir_all(dir).map_err(io_err("creating", dir))?;

    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "quicswarm private CA");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca_key = rcgen::KeyPair::generate()?;
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key)?;

    let mut names: Vec<String> = DEFAULT_GATEWAY_NAMES
        .iter()
        .map(|s| s.to_string())
        .collect();
    names.extend(gateway_names.iter().map(|s| s.to_string()));
    let mut gw_params = rcgen::CertificateParams::new(names)?;
    gw_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "quicswarm gateway");
    gw_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let gw_key = rcgen::KeyPair::generate()?;
    let gw_cert = gw_params.signed_by(&gw_key, &ca)?;

    let mut cl_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    cl_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "client");
    cl_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cl_key = rcgen::KeyPair::generate()?;
    let cl_cert = cl_params.signed_by(&cl_key, &ca)?;

    write_private(&dir.join("ca.key"), ca.key().serialize_pem().as_bytes())?;
    write_atomic(&dir.join("ca.pem"), ca.pem().as_bytes())?;
    write_private(&dir.join("gateway.key"), gw_key.serialize_pem().as_bytes())?;
    write_atomic(&dir.join("gateway.pem"), gw_cert.pem().as_bytes())?;
    write_private(&dir.join("client.key"), cl_key.serialize_pem().as_bytes())?;
    write_atomic(&dir.join("client.pem"), cl_cert.pem().as_bytes())?;

    Ok(CertsInit {
        ca_cert: dir.join("ca.pem"),
        gateway_cert: dir.join("gateway.pem"),
        client_cert: dir.join("client.pem"),
        gateway_fingerprint: Fingerprint::of(gw_cert.der()),
    })
}

//! The gateway's configuration file (TOML).
//!
//! ```toml
//! listen = "0.0.0.0:1857"
//! pool = 5
//! cert_dir = "certs"            # gateway.pem / gateway.key, generated if absent
//! client_ca = "certs/ca.pem"    # require mutual TLS (optional)
//! upload_dir = "incoming"       # accept uploads (optional)
//! preset = "wifi"               # lan | wifi | cellular
//! tcp = true                    # also TLS-over-TCP on the same port (optional)
//! metrics = "127.0.0.1:9464"    # Prometheus metrics on http://ADDR/metrics (optional)
//!
//! [serve]                       # named read roots
//! logs = "/var/log/robot"
//!
//! [permissions.default]         # anonymous clients and identities without an entry
//! subroutines = "all"           # "all", "none" or a list of names
//! roots = "all"
//! upload = true
//! close_gateway = false
//!
//! [permissions.viewer]          # the client whose certificate is named "viewer"
//! subroutines = ["camera"]
//! roots = ["logs"]
//! upload = false
//! ```
//!
//! Relative paths are taken from the configuration file's folder.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde::Deserialize;

use crate::{Allow, GatewayBuilder, LinkPreset, Permissions, TransportTuning};

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this configuration.
    #[error("{0}")]
    Parse(String),
    /// A value is not usable (an unknown preset, an unreadable CA file).
    #[error("{0}")]
    Invalid(String),
}

/// A gateway's configuration, as read from a TOML file. Every field is optional; what is
/// not set keeps the builder's default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct GatewayConfig {
    /// Listen address.
    pub listen: Option<SocketAddr>,
    /// Handler pool size.
    pub pool: Option<usize>,
    /// Certificate folder.
    pub cert_dir: Option<PathBuf>,
    /// CA of client certificates: requires mutual TLS.
    pub client_ca: Option<PathBuf>,
    /// Upload folder.
    pub upload_dir: Option<PathBuf>,
    /// Whether `close_gateway` is allowed by default.
    pub allow_close: Option<bool>,
    /// Transport preset: `lan`, `wifi` or `cellular`.
    pub preset: Option<String>,
    /// Also accept TLS-over-TCP on the same port.
    pub tcp: Option<bool>,
    /// Serve Prometheus metrics on `http://ADDR/metrics`.
    pub metrics: Option<SocketAddr>,
    /// Named read roots.
    #[serde(default)]
    pub serve: BTreeMap<String, PathBuf>,
    /// Permissions by client identity; `default` for everyone else.
    #[serde(default)]
    pub permissions: BTreeMap<String, PermissionsConfig>,
}

/// Permissions as written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct PermissionsConfig {
    /// Subroutines: `"all"`, `"none"` or a list of names. Default all.
    #[serde(default = "all")]
    pub subroutines: AllowConfig,
    /// File roots: as `subroutines`. Default all.
    #[serde(default = "all")]
    pub roots: AllowConfig,
    /// Uploads. Default true.
    #[serde(default = "yes")]
    pub upload: bool,
    /// `close_gateway`. Default false.
    #[serde(default)]
    pub close_gateway: bool,
}

/// `"all"`, `"none"` or a list of names.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum AllowConfig {
    /// `"all"` or `"none"`.
    Word(String),
    /// These names.
    List(Vec<String>),
}

fn all() -> AllowConfig {
    AllowConfig::Word("all".into())
}

fn yes() -> bool {
    true
}

impl AllowConfig {
    fn to_allow(&self) -> Result<Allow, ConfigError> {
        match self {
            Self::Word(w) if w == "all" => Ok(Allow::All),
            Self::Word(w) if w == "none" => Ok(Allow::Nothing),
            Self::Word(w) => Err(ConfigError::Invalid(format!(
                "expected \"all\", \"none\" or a list, got {w:?}"
            ))),
            Self::List(names) => Ok(Allow::only(names.iter().cloned())),
        }
    }
}

impl PermissionsConfig {
    fn to_permissions(&self) -> Result<Permissions, ConfigError> {
        let mut p = Permissions::none();
        p.subroutines = self.subroutines.to_allow()?;
        p.roots = self.roots.to_allow()?;
        p.upload = self.upload;
        p.close_gateway = self.close_gateway;
        Ok(p)
    }
}

impl GatewayConfig {
    /// Parses TOML text; relative paths stay relative to the current folder.
    ///
    /// # Errors
    /// [`ConfigError::Parse`] for bad TOML or unknown keys.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))
    }

    /// Reads a file; relative paths in it are taken from its folder.
    ///
    /// # Errors
    /// If the file cannot be read or parsed.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config = Self::from_toml(&text)
            .map_err(|e| ConfigError::Parse(format!("{}: {e}", path.display())))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        config.cert_dir.as_mut().map(fix);
        config.client_ca.as_mut().map(fix);
        config.upload_dir.as_mut().map(fix);
        config.serve.values_mut().for_each(fix);
        Ok(config)
    }

    /// Applies the configuration to a builder.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] for an unknown preset, a bad permission value or an unreadable
    /// client CA.
    pub fn apply(&self, mut builder: GatewayBuilder) -> Result<GatewayBuilder, ConfigError> {
        if let Some(listen) = self.listen {
            builder = builder.listen(listen);
        }
        if let Some(pool) = self.pool {
            builder = builder.pool_size(pool);
        }
        if let Some(dir) = &self.cert_dir {
            builder = builder.cert_dir(dir);
        }
        if let Some(ca) = &self.client_ca {
            // Read now, so a bad file is a configuration error, and again on every reload.
            crate::tls::load_certs(ca).map_err(|e| ConfigError::Invalid(e.to_string()))?;
            builder = builder.client_ca_file(ca);
        }
        if let Some(dir) = &self.upload_dir {
            builder = builder.upload_dir(dir);
        }
        if let Some(preset) = &self.preset {
            let preset = match preset.as_str() {
                "lan" => LinkPreset::Lan,
                "wifi" => LinkPreset::Wifi,
                "cellular" => LinkPreset::Cellular,
                other => {
                    return Err(ConfigError::Invalid(format!(
                        "unknown preset {other:?} (lan, wifi, cellular)"
                    )))
                }
            };
            builder = builder.transport(TransportTuning::preset(preset));
        }
        for (name, dir) in &self.serve {
            builder = builder.serve(name.clone(), dir);
        }
        for (identity, p) in &self.permissions {
            let p = p.to_permissions()?;
            builder = if identity == "default" {
                builder.default_permissions(p)
            } else {
                builder.permissions(identity.clone(), p)
            };
        }
        if let Some(allow) = self.allow_close {
            builder = builder.allow_close(allow);
        }
        if let Some(tcp) = self.tcp {
            builder = builder.tcp(tcp);
        }
        if let Some(addr) = self.metrics {
            builder = builder.metrics(addr);
        }
        Ok(builder)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let text = include_str!("gateway_config.rs")
            .lines()
            .filter_map(|l| l.strip_prefix("//! "))
            .skip_while(|l| !l.starts_with("```toml"))
            .skip(1)
            .take_while(|l| !l.starts_with("```"))
            .collect::<Vec<_>>()
            .join("\n");
        let c = GatewayConfig::from_toml(&text).unwrap();
        assert_eq!(c.listen, Some("0.0.0.0:1857".parse().unwrap()));
        assert_eq!(c.pool, Some(5));
        assert_eq!(c.metrics, Some("127.0.0.1:9464".parse().unwrap()));
        assert_eq!(c.serve.get("logs"), Some(&PathBuf::from("/var/log/robot")));
        let viewer = c.permissions["viewer"].to_permissions().unwrap();
        assert!(viewer.subroutines.allows("camera") && !viewer.subroutines.allows("drive"));
        assert!(!viewer.upload && !viewer.close_gateway);
        assert_eq!(
            c.permissions["default"].to_permissions().unwrap(),
            Permissions::all_but_close()
        );
    }

    #[test]
    fn refuses_unknown_keys_and_values() {
        assert!(GatewayConfig::from_toml("listen = \"0.0.0.0:1\"\nbogus = 1").is_err());
        let c = GatewayConfig::from_toml("preset = \"satellite\"").unwrap();
        assert!(matches!(
            c.apply(crate::Gateway::builder()),
            Err(ConfigError::Invalid(_))
        ));
        let c = GatewayConfig::from_toml("[permissions.x]\nroots = \"some\"").unwrap();
        assert!(c.apply(crate::Gateway::builder()).is_err());
    }
}

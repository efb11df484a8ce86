//! qlog files, one per connection (feature `qlog`), through quinn's qlog support: what
//! quinn sent, received and lost, and its RTT and congestion window over time, to open in
//! qvis (<https://qvis.quictools.info>) when a link misbehaves.
//!
//! Files are named `{side}-{unix ms}-{n}-{peer ip}_{port}.sqlog`, `n` counting this
//! process's files (JSON text sequences, qlog 0.3's streaming format), and written through a buffer as events happen; a connection's
//! file is complete once the connection has ended. Nothing bounds their size: qlog is for
//! debugging sessions, not for leaving on.

use std::{net::SocketAddr, path::PathBuf};

/// The folder qlog files go to.
#[derive(Debug, Clone)]
pub(crate) struct QlogDir(
    // Read only when the feature is on.
    #[cfg_attr(not(feature = "qlog"), allow(dead_code))] PathBuf,
);

impl QlogDir {
    /// Creates the folder if needed.
    pub(crate) fn new(dir: PathBuf) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }

    /// The file a connection of `side` ("gateway" or "controller") with `peer` logs to.
    #[cfg_attr(not(feature = "qlog"), allow(dead_code))]
    fn path(&self, side: &str, peer: SocketAddr) -> PathBuf {
        // A swarm opens several connections to one peer within a millisecond: the counter
        // keeps their files apart (`File::create` would truncate the first).
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        self.0.join(format!(
            "{side}-{ms}-{n}-{}_{}.sqlog",
            peer.ip(),
            peer.port()
        ))
    }

    /// Makes `transport` log the connection it is used for to a new file. A file that cannot
    /// be created is logged and skipped: the connection goes ahead without qlog.
    #[cfg(feature = "qlog")]
    pub(crate) fn attach(
        &self,
        transport: &mut quinn::TransportConfig,
        side: &str,
        peer: SocketAddr,
    ) {
        let path = self.path(side, peer);
        let file = match std::fs::File::create_new(&path) {
            Ok(file) => file,
            Err(e) => {
                tracing::warn!(path = %path.display(), "cannot create the qlog file: {e}");
                return;
            }
        };
        let mut config = quinn::QlogConfig::default();
        config
            .writer(Box::new(std::io::BufWriter::new(file)))
            .title(Some(format!("quicswarm {side} with {peer}")));
        transport.qlog_stream(config.into_stream());
    }

    /// Without the `qlog` feature there is nothing to attach (and no way to make a
    /// `QlogDir` through the public API).
    #[cfg(not(feature = "qlog"))]
    pub(crate) fn attach(&self, _: &mut quinn::TransportConfig, _: &str, _: SocketAddr) {}
}

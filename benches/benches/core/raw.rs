//! The raw quinn baseline: an echo and bulk server and client on bare QUIC streams, with
//! the same windows quicswarm uses.

use std::{net::SocketAddr, sync::Arc, time::Instant};

use anyhow::Result;
use bytes::Bytes;
use quinn::{crypto::rustls::QuicClientConfig, Endpoint, TransportConfig, VarInt};

/// Bytes of a small stream item, ours and raw alike.
pub(crate) const ITEM_SMALL: usize = 1024;
/// Bytes of a big stream item (and of a raw bulk write).
pub(crate) const ITEM_BIG: usize = 64 * 1024;

fn transport() -> Arc<TransportConfig> {
    // The same windows quicswarm uses.
    let mut t = TransportConfig::default();
    t.max_concurrent_bidi_streams(VarInt::from_u32(1024));
    t.receive_window(VarInt::from_u32(64 * 1024 * 1024));
    t.stream_receive_window(VarInt::from_u32(8 * 1024 * 1024));
    t.send_window(64 * 1024 * 1024);
    Arc::new(t)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A raw quinn server endpoint on a loopback port, with `cert` and its PKCS#8 `key`.
pub(crate) fn raw_server(
    cert: rustls::pki_types::CertificateDer<'static>,
    key: Vec<u8>,
) -> Result<Endpoint> {
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key.into());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)?;
    tls.alpn_protocols = vec![b"raw".to_vec()];
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(
        quinn::crypto::rustls::QuicServerConfig::try_from(tls)?,
    ));
    config.transport_config(transport());
    let socket = quicswarm::testing::udp_socket("127.0.0.1:0".parse()?)?;
    Ok(Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(config),
        socket,
        Arc::new(quinn::TokioRuntime),
    )?)
}

/// Serves every connection and stream of `endpoint` with [`raw_handle`].
pub(crate) async fn serve_raw(endpoint: Endpoint) {
    while let Some(incoming) = endpoint.accept().await {
        tokio::spawn(async move {
            let Ok(conn) = incoming.await else { return };
            while let Ok((send, recv)) = conn.accept_bi().await {
                tokio::spawn(raw_handle(send, recv));
            }
        });
    }
}

/// Request: one tag byte and a u64. `E`: echo that many bytes back; `B`: send that many bytes
/// in 64 KiB writes; `I`: send that many bytes as 1 KiB items, each after a 4-byte length.
async fn raw_handle(mut send: quinn::SendStream, mut recv: quinn::RecvStream) -> Result<()> {
    let mut header = [0u8; 9];
    recv.read_exact(&mut header).await?;
    let n = u64::from_le_bytes(header[1..].try_into()?);
    match header[0] {
        b'E' => {
            let mut buf = vec![0u8; n as usize];
            recv.read_exact(&mut buf).await?;
            send.write_all(&buf).await?;
        }
        b'B' => {
            let chunk = Bytes::from(vec![7u8; ITEM_BIG]);
            let mut left = n;
            while left > 0 {
                let len = left.min(ITEM_BIG as u64) as usize;
                send.write_chunk(chunk.slice(..len)).await?;
                left -= len as u64;
            }
        }
        b'I' => {
            let item = Bytes::from(vec![7u8; ITEM_SMALL]);
            let len = Bytes::copy_from_slice(&(ITEM_SMALL as u32).to_le_bytes());
            for _ in 0..n / ITEM_SMALL as u64 {
                send.write_all_chunks(&mut [len.clone(), item.clone()])
                    .await?;
            }
        }
        _ => {}
    }
    send.finish()?;
    let _ = send.stopped().await;
    Ok(())
}

/// A raw quinn connection to `addr`, trusting `cert`.
pub(crate) async fn raw_client(
    addr: SocketAddr,
    cert: rustls::pki_types::CertificateDer<'static>,
) -> Result<quinn::Connection> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert)?;
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"raw".to_vec()];
    let mut config = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls)?));
    config.transport_config(transport());
    let socket = quicswarm::testing::udp_socket("127.0.0.1:0".parse()?)?;
    let endpoint = Endpoint::new(
        quinn::EndpointConfig::default(),
        None,
        socket,
        Arc::new(quinn::TokioRuntime),
    )?;
    Ok(endpoint.connect_with(config, addr, "localhost")?.await?)
}

/// One echo of `size` bytes on a stream of its own.
pub(crate) async fn raw_echo(conn: &quinn::Connection, size: usize) -> Result<()> {
    let (mut send, mut recv) = conn.open_bi().await?;
    let mut req = vec![b'E'];
    req.extend_from_slice(&(size as u64).to_le_bytes());
    req.resize(9 + size, 1);
    send.write_all(&req).await?;
    send.finish()?;
    let reply = recv.read_to_end(size + 1).await?;
    anyhow::ensure!(reply.len() == size, "short echo");
    Ok(())
}

/// Reads a whole raw stream; returns MB/s.
pub(crate) async fn raw_bulk(conn: &quinn::Connection, tag: u8, bytes: u64) -> Result<f64> {
    let start = Instant::now();
    let (mut send, mut recv) = conn.open_bi().await?;
    let mut req = vec![tag];
    req.extend_from_slice(&bytes.to_le_bytes());
    send.write_all(&req).await?;
    send.finish()?;
    let mut got = 0u64;
    while let Some(chunk) = recv.read_chunk(usize::MAX, true).await? {
        got += chunk.bytes.len() as u64;
    }
    anyhow::ensure!(got >= bytes, "raw stream short: {got} of {bytes}");
    Ok(got as f64 / start.elapsed().as_secs_f64() / 1e6)
}

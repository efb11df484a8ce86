//! The hello exchange: the controller asks a gateway for a handler, over a finished
//! handshake or (0-RTT) as early data answered in the background.

use std::{
    net::SocketAddr,
    sync::{Arc, OnceLock},
    time::Duration,
};

use quicswarm_proto::{ErrorCode, Hello, HelloReply, PROTOCOL_VERSION};
use tokio::sync::watch;
use tracing::debug;

use super::Controller;
use crate::{
    client::{Client, ClientInner},
    error::ConnectError,
    io::{write_frame, FrameReader},
    transport::Connection,
    transport::Disconnect,
};

impl Controller {
    pub(super) async fn hello(
        &self,
        conn: Connection,
        remote: SocketAddr,
    ) -> Result<Client, ConnectError> {
        let protocol = |detail: String| ConnectError::Protocol {
            gateway: remote,
            detail,
        };
        let lost = |source: Disconnect| ConnectError::Connection {
            gateway: remote,
            source,
        };
        let (mut send, recv) = conn.open_bi().await.map_err(lost)?;
        let hello = Hello {
            version: PROTOCOL_VERSION,
            name: self.config.name.clone(),
        };
        if let Err(e) = write_frame(&mut send, &hello).await {
            return Err(match e {
                crate::transport::WriteError::ConnectionLost(source) => {
                    refused_by_close(remote, source)
                }
                other => protocol(other.to_string()),
            });
        }
        let _ = send.finish();
        let mut reader = FrameReader::new(recv, self.config.max_frame_len);
        let reply: HelloReply = match reader.expect_frame().await {
            Ok(reply) => reply,
            Err(crate::io::FrameError::Read(crate::transport::ReadError::ConnectionLost(
                source,
            ))) => return Err(refused_by_close(remote, source)),
            Err(e) => {
                // Over TCP a refused connection shows as the stream ending: the reason comes
                // with the connection's end, a moment later.
                let closed = tokio::time::timeout(Duration::from_millis(200), conn.closed()).await;
                return Err(match closed {
                    Ok(source) => refused_by_close(remote, source),
                    Err(_) => protocol(e.to_string()),
                });
            }
        };
        match reply {
            HelloReply::Welcome(welcome) => {
                debug!(gateway = %remote, handler = welcome.handler_id, used = welcome.pool_used, "handler granted");
                let known = Arc::new(OnceLock::new());
                let _ = known.set(welcome);
                Ok(Client::new(ClientInner::new(
                    conn,
                    known,
                    None,
                    remote,
                    self.config.clone(),
                )))
            }
            HelloReply::Refused {
                code,
                pool_size,
                message,
            } => {
                conn.close(code.to_u32(), code.reason().as_bytes());
                Err(match code {
                    ErrorCode::PoolFull => ConnectError::PoolFull {
                        gateway: remote,
                        size: pool_size,
                    },
                    code => ConnectError::Refused {
                        gateway: remote,
                        code,
                        message,
                    },
                })
            }
        }
    }

    /// Sends `Hello` as early data and returns the client at once; the `Welcome` is read in
    /// the background. If the gateway rejects early data, `Hello` is sent again first, before
    /// any request waiting for the handshake.
    pub(super) async fn hello_early(
        &self,
        conn: quinn::Connection,
        accepted: quinn::ZeroRttAccepted,
        remote: SocketAddr,
    ) -> Result<Client, ConnectError> {
        let lost = |source: Disconnect| ConnectError::Connection {
            gateway: remote,
            source,
        };
        let hello = Hello {
            version: PROTOCOL_VERSION,
            name: self.config.name.clone(),
        };
        let conn = Connection::from(conn);
        let (mut send, recv) = conn.open_bi().await.map_err(lost)?;
        let _ = write_frame(&mut send, &hello).await;
        let _ = send.finish();
        let (tx, rx) = watch::channel(None);
        let welcome = Arc::new(OnceLock::new());
        let (c, w, max) = (conn.clone(), welcome.clone(), self.config.max_frame_len);
        tokio::spawn(async move {
            let accepted = accepted.await;
            let mut reader = FrameReader::new(recv, max);
            if !accepted {
                // Everything sent early was dropped, the Hello too.
                let Ok((mut send, recv)) = c.open_bi().await else {
                    return;
                };
                let _ = write_frame(&mut send, &hello).await;
                let _ = send.finish();
                reader = FrameReader::new(recv, max);
            }
            let _ = tx.send(Some(accepted));
            debug!(gateway = %remote, accepted, "0-RTT handshake complete");
            match reader.expect_frame::<HelloReply>().await {
                Ok(HelloReply::Welcome(welcome)) => {
                    let _ = w.set(welcome);
                }
                Ok(HelloReply::Refused { code, .. }) => {
                    c.close(code.to_u32(), code.reason().as_bytes())
                }
                Err(e) => debug!(gateway = %remote, "no welcome: {e}"),
            }
        });
        Ok(Client::new(ClientInner::new(
            conn,
            welcome,
            Some(rx),
            remote,
            self.config.clone(),
        )))
    }
}

/// A connection the gateway closed during hello: map its code to a typed refusal.
fn refused_by_close(remote: SocketAddr, source: Disconnect) -> ConnectError {
    match source {
        Disconnect::Closed {
            code: ErrorCode::PoolFull,
            ..
        } => ConnectError::PoolFull {
            gateway: remote,
            size: 0,
        },
        Disconnect::Closed { code, reason } if code != ErrorCode::NoError => {
            ConnectError::Refused {
                gateway: remote,
                code,
                message: reason,
            }
        }
        source => ConnectError::Connection {
            gateway: remote,
            source,
        },
    }
}

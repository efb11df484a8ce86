//! A blocking facade for programs that do not use async: the same operations, each call
//! waiting for its answer.
//!
//! Each [`Controller`] owns a small tokio runtime (one worker thread) that keeps its
//! connections alive (keep-alives, acknowledgements) between calls.
//!
//! ```no_run
//! use quicswarm::{blocking, ControllerConfig, Trust};
//!
//! let controller = blocking::Controller::new(ControllerConfig::with_trust(
//!     Trust::KnownGateways("known_gateways".into()),
//! ))?;
//! let client = controller.get_client("127.0.0.1:1857")?;
//! let reply = client.call("echo", &"hello")?;
//! for item in client.stream("counter", &quicswarm::Json(r#"{"count": 3, "size": 8}"#))? {
//!     let (ident, bytes) = item?;
//!     println!("{ident}: {} bytes", bytes.len());
//! }
//! client.close()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use tokio::runtime::Runtime;

use crate::{
    CallError, ConnectError, ControllerConfig, GatewayBuilder, GatewayError, StreamOutcome, ToArgs,
};

fn runtime() -> std::io::Result<Arc<Runtime>> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("quicswarm")
        .enable_all()
        .build()
        .map(Arc::new)
}

/// Blocking [`crate::Controller`].
#[derive(Debug)]
pub struct Controller {
    rt: Arc<Runtime>,
    inner: crate::Controller,
}

impl Controller {
    /// A controller with its own runtime and UDP socket.
    ///
    /// # Errors
    /// If the runtime or the socket cannot be created.
    pub fn new(config: ControllerConfig) -> Result<Self, ConnectError> {
        let rt = runtime()?;
        let inner = {
            let _guard = rt.enter();
            crate::Controller::new(config)?
        };
        Ok(Self { rt, inner })
    }

    /// See [`crate::Controller::get_client`].
    ///
    /// # Errors
    /// As the async version.
    pub fn get_client(&self, addr: &str) -> Result<Client, ConnectError> {
        let inner = self.rt.block_on(self.inner.get_client(addr))?;
        Ok(Client {
            rt: self.rt.clone(),
            inner,
        })
    }
}

/// Blocking [`crate::Client`].
#[derive(Debug, Clone)]
pub struct Client {
    rt: Arc<Runtime>,
    inner: crate::Client,
}

impl Client {
    /// The async client underneath.
    pub fn as_async(&self) -> &crate::Client {
        &self.inner
    }

    /// See [`crate::Client::ping`].
    ///
    /// # Errors
    /// As the async version.
    pub fn ping(&self) -> Result<Duration, CallError> {
        self.rt.block_on(self.inner.ping())
    }

    /// See [`crate::Client::call`].
    ///
    /// # Errors
    /// As the async version.
    pub fn call(&self, name: &str, args: &(impl ToArgs + ?Sized)) -> Result<Bytes, CallError> {
        self.rt.block_on(self.inner.call(name, args))
    }

    /// See [`crate::Client::stream`]; the items come as an iterator.
    ///
    /// # Errors
    /// As the async version.
    pub fn stream(&self, name: &str, args: &(impl ToArgs + ?Sized)) -> Result<ItemIter, CallError> {
        let stream = self.rt.block_on(self.inner.stream(name, args))?;
        Ok(ItemIter {
            rt: self.rt.clone(),
            stream: Some(stream),
        })
    }

    /// See [`crate::Client::subscribe`]; the items come as an iterator.
    ///
    /// # Errors
    /// As the async version.
    pub fn subscribe(
        &self,
        name: &str,
        args: &(impl ToArgs + ?Sized),
        options: &crate::SubscribeOptions,
    ) -> Result<ItemIter, CallError> {
        let stream = self
            .rt
            .block_on(self.inner.subscribe(name, args, options))?;
        Ok(ItemIter {
            rt: self.rt.clone(),
            stream: Some(stream),
        })
    }

    /// See [`crate::Client::stats`].
    pub fn stats(&self) -> crate::ClientStats {
        self.inner.stats()
    }

    /// See [`crate::Client::stream_with`].
    ///
    /// # Errors
    /// As the async version.
    pub fn stream_with(
        &self,
        name: &str,
        args: &(impl ToArgs + ?Sized),
        on_item: impl FnMut(i64, Bytes) -> bool,
        on_end: impl FnOnce(),
    ) -> Result<StreamOutcome, CallError> {
        self.rt
            .block_on(self.inner.stream_with(name, args, on_item, on_end))
    }

    /// See [`crate::Client::send`].
    ///
    /// # Errors
    /// As the async version.
    pub fn send(
        &self,
        name: &str,
        args: &(impl ToArgs + ?Sized),
        data: impl Into<Bytes>,
    ) -> Result<i64, CallError> {
        self.rt.block_on(self.inner.send(name, args, data))
    }

    /// See [`crate::Client::close`].
    ///
    /// # Errors
    /// As the async version.
    pub fn close(self) -> Result<(), CallError> {
        self.rt.block_on(self.inner.close())
    }

    /// See [`crate::Client::close_gateway`].
    ///
    /// # Errors
    /// As the async version.
    pub fn close_gateway(&self) -> Result<(), CallError> {
        self.rt.block_on(self.inner.close_gateway())
    }
}

/// Items of a stream subscription as an iterator. Dropping it aborts the subscription.
#[derive(Debug)]
pub struct ItemIter {
    rt: Arc<Runtime>,
    stream: Option<crate::ItemStream>,
}

impl Iterator for ItemIter {
    type Item = Result<(i64, Bytes), CallError>;

    fn next(&mut self) -> Option<Self::Item> {
        let stream = self.stream.as_mut()?;
        match self.rt.block_on(stream.next()) {
            Ok(Some(item)) => Some(Ok(item)),
            Ok(None) => {
                self.stream = None;
                None
            }
            Err(e) => {
                self.stream = None;
                Some(Err(e))
            }
        }
    }
}

/// A gateway served from its own runtime, for programs without async.
#[derive(Debug)]
pub struct Gateway {
    rt: Arc<Runtime>,
    inner: Option<crate::Gateway>,
}

impl Gateway {
    /// Starts the gateway described by `builder` on a new runtime (two worker threads).
    ///
    /// # Errors
    /// As [`GatewayBuilder::spawn`].
    pub fn spawn(builder: GatewayBuilder) -> Result<Self, GatewayError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("quicswarm-gateway")
            .enable_all()
            .build()
            .map(Arc::new)
            .map_err(|source| GatewayError::Bind {
                addr: ([0, 0, 0, 0], 0).into(),
                source,
            })?;
        let inner = rt.block_on(builder.spawn())?;
        Ok(Self {
            rt,
            inner: Some(inner),
        })
    }

    /// The running gateway.
    pub fn as_async(&self) -> Option<&crate::Gateway> {
        self.inner.as_ref()
    }

    /// Serves until the gateway is closed (the seed's `start(blocking=True)`).
    pub fn run(&self) {
        if let Some(gw) = &self.inner {
            self.rt.block_on(gw.closed());
        }
    }

    /// Graceful shutdown; see [`crate::Gateway::shutdown`].
    pub fn shutdown(mut self, grace: Duration) {
        if let Some(gw) = self.inner.take() {
            self.rt.block_on(gw.shutdown(grace));
        }
    }
}

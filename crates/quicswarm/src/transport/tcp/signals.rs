//! What the driver and the streams share: the connection's close reason and, per stream,
//! what the peer said of it in control messages (stopped, reset).

use std::{
    collections::HashMap,
    sync::{Arc, PoisonError, Weak},
};

use quicswarm_proto::ErrorCode;
use tokio::sync::watch;

use crate::transport::Disconnect;

pub(super) type Reason = Arc<watch::Sender<Option<Disconnect>>>;
pub(super) type StreamMap = std::sync::Mutex<HashMap<u32, Weak<Signals>>>;
pub(super) type Registry = Arc<StreamMap>;

/// What the peer said about one stream through control messages.
#[derive(Debug)]
pub(super) struct Signals {
    pub(super) id: u32,
    /// The peer stopped reading (its code): our writes fail with `Stopped`.
    pub(super) stopped: watch::Sender<Option<ErrorCode>>,
    /// The peer reset its sending side (its code): our reads fail with `Reset`.
    pub(super) reset: watch::Sender<Option<ErrorCode>>,
    pub(super) registry: Weak<StreamMap>,
}

impl Signals {
    pub(super) fn register(registry: &Registry, id: u32) -> Arc<Self> {
        let signals = Arc::new(Self {
            id,
            stopped: watch::channel(None).0,
            reset: watch::channel(None).0,
            registry: Arc::downgrade(registry),
        });
        registry
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, Arc::downgrade(&signals));
        signals
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        if let Some(registry) = self.registry.upgrade() {
            let mut map = registry.lock().unwrap_or_else(PoisonError::into_inner);
            // Only our own entry: yamux does not reuse ids, but be exact anyway.
            if map.get(&self.id).is_some_and(|w| w.strong_count() == 0) {
                map.remove(&self.id);
            }
        }
    }
}

/// Sets the close reason unless one is set already; the first reason wins.
pub(super) fn set_reason(reason: &Reason, why: Disconnect) {
    reason.send_if_modified(|r| {
        if r.is_none() {
            *r = Some(why);
            true
        } else {
            false
        }
    });
}

/// Why the connection ended; a connection whose handles outlived its driver without a
/// reason was reset.
pub(super) fn lost(reason: &Reason) -> Disconnect {
    reason.borrow().clone().unwrap_or(Disconnect::Reset)
}

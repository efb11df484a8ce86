//! The demo subroutines served by `quicswarm gateway --demo` and used by the demo, the tests
//! and the benchmarks.
//!
//! | name | kind | arguments | does |
//! |---|---|---|---|
//! | `echo` | batch | a string | returns its bytes |
//! | `counter` | stream | `{"count": N, "size": S}` | idents `0..N`, each `S` bytes |
//! | `ticker` | stream | `{"count": N, "interval_ms": M}` | one small item every `M` ms |
//! | `byte_sum` | sink | none | returns the sum of all buffer bytes |
//! | `fail` | batch | none | always returns an error |
//! | `panic` | batch | none | panics |

use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use serde::{Deserialize, Serialize};

use crate::{Registry, SinkData, StreamContext};

/// Arguments of `counter`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct CounterArgs {
    /// Number of items.
    pub count: u64,
    /// Bytes per item.
    pub size: usize,
}

/// Arguments of `ticker`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct TickerArgs {
    /// Number of items.
    pub count: u64,
    /// Milliseconds between items.
    pub interval_ms: u64,
}

/// The byte at `offset` of every `counter` item: a pattern, so receivers can check content.
pub fn counter_byte(offset: usize) -> u8 {
    (offset % 251) as u8
}

/// A registry holding the demo subroutines.
pub fn registry() -> Registry {
    let registry = Registry::new();
    register(&registry);
    registry
}

/// Adds the demo subroutines to `registry`.
pub fn register(registry: &Registry) {
    registry
        .batch("echo", |text: String| async move {
            Ok::<_, String>(text.into_bytes())
        })
        .stream("counter", |args: CounterArgs, ctx: StreamContext| {
            // One shared buffer: items are zero-copy slices of it.
            let body: Bytes = (0..args.size).map(counter_byte).collect::<Vec<u8>>().into();
            let start = ctx
                .resume_after
                .map_or(0, |last| last.saturating_add(1).max(0) as u64);
            stream::iter(
                (start..args.count).map(move |i| Ok::<_, String>((i as i64, body.clone()))),
            )
        })
        .stream("ticker", |args: TickerArgs, _ctx: StreamContext| {
            let period = Duration::from_millis(args.interval_ms.max(1));
            stream::unfold(0u64, move |i| async move {
                if i >= args.count {
                    return None;
                }
                if i > 0 {
                    tokio::time::sleep(period).await;
                }
                let item = Ok::<_, String>((i as i64, Bytes::from(format!("tick {i}"))));
                Some((item, i + 1))
            })
        })
        .sink("byte_sum", |_: (), mut data: SinkData| async move {
            let mut sum = 0i64;
            while let Some(chunk) = data.chunk().await.map_err(|e| e.to_string())? {
                sum += chunk.iter().map(|&b| i64::from(b)).sum::<i64>();
            }
            Ok::<_, String>(sum)
        })
        .batch("fail", |_: ()| async {
            Err::<Bytes, _>("this subroutine always fails")
        })
        .batch("panic", |_: ()| async {
            if true {
                panic!("the demo panic subroutine panicked on purpose");
            }
            Ok::<Bytes, String>(Bytes::new())
        });
}

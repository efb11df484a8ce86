//! Argument decoding, the registry's listing and a blocking producer's bounds, without a network.

use super::*;

#[test]
fn json_and_postcard_args_decode_into_the_same_type() {
    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct A {
        count: u32,
        name: String,
    }
    let pc = Args::postcard(postcard::to_stdvec(&(7u32, "x")).unwrap());
    let js = Args::json(r#"{"count": 7, "name": "x"}"#);
    let want = A {
        count: 7,
        name: "x".into(),
    };
    assert_eq!(decode_args::<A>(&pc).unwrap(), want);
    assert_eq!(decode_args::<A>(&js).unwrap(), want);
    assert!(matches!(
        decode_args::<A>(&Args::json("[1]")),
        Err(Failure::BadArgs(_))
    ));
    decode_args::<()>(&Args::json("")).unwrap();
}

#[test]
fn registry_lists_kinds() {
    let r = Registry::new();
    r.batch("b", |_: ()| async { Ok::<_, String>(Bytes::new()) })
        .stream("s", |_: (), _| {
            futures_util::stream::empty::<Result<(i64, Bytes), String>>()
        })
        .sink("k", |_: (), _| async { Ok::<_, String>(()) });
    let kinds: Vec<_> = r.list().into_iter().map(|i| (i.name, i.kind)).collect();
    assert_eq!(
        kinds,
        vec![
            ("b".to_string(), SubroutineKind::Batch),
            ("k".to_string(), SubroutineKind::Sink),
            ("s".to_string(), SubroutineKind::Stream)
        ]
    );
    assert!(r.remove("b"));
    assert!(r.get("b").is_none());
}

/// How far a blocking producer gets ahead of a client that reads nothing: by bytes for
/// big items, by count for small ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_blocking_producer_runs_ahead_by_bytes_and_by_count() {
    for (size, expected) in [(256 * 1024, EMIT_BYTES / (256 * 1024)), (8, EMIT_QUEUE)] {
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let done_tx = std::sync::Mutex::new(Some(done_tx));
        let r = Registry::new();
        r.stream_blocking("ahead", move |_: (), emitter: &mut Emitter| {
            let mut queued = 0;
            // Stop at the first item the queue cannot take without waiting.
            while emitter.try_emit(queued as i64, vec![0u8; size])?.is_none() {
                queued += 1;
            }
            if let Some(tx) = done_tx.lock().unwrap().take() {
                let _ = tx.send(queued);
            }
            Ok::<_, Aborted>(())
        });
        let Some(Subroutine::Stream(f)) = r.get("ahead").map(|e| e.subroutine) else {
            panic!("a stream subroutine");
        };
        let producer = f(Args::postcard(vec![]), StreamContext::default()).unwrap();
        let queued = tokio::time::timeout(std::time::Duration::from_secs(10), done_rx)
            .await
            .expect("the producer stops")
            .unwrap();
        assert_eq!(queued, expected, "items of {size} bytes");
        drop(producer);
    }
}

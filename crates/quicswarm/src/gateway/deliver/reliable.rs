//! Reliable delivery: items in order on the operation's own stream, small ones batched.

use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use quicswarm_proto::StreamFrame;

use super::super::reply::log_failure;
use crate::{
    ended::{Ended, Reply},
    io::frame_into,
    metrics::ItemCounters,
    transport::SendStream,
};

/// Items at least this large are written as their own chunk instead of being copied into the
/// batch buffer.
const COPY_LIMIT: usize = 16 * 1024;
/// Flush the batch buffer once it holds this much.
const BATCH_FLUSH: usize = 64 * 1024;

/// Pumps a producer into the stream. Small items are batched into one write while the producer
/// has more ready; the producer is dropped as soon as the client stops the stream.
pub(in crate::gateway) async fn run_stream(
    send: &mut SendStream,
    mut producer: crate::subroutine::Producer,
    name: &str,
    counted: &ItemCounters,
) -> Reply {
    // Grows to what the stream needs: a short stream never allocates the full flush size.
    let mut batch: Vec<u8> = Vec::new();
    loop {
        // Take what is ready without waiting; wait (watching for an abort) only when the batch
        // is empty, so nothing sits in the buffer while the producer idles.
        let next = match producer.next().now_or_never() {
            Some(next) => next,
            None => {
                if !batch.is_empty() {
                    send.write_chunk(take_batch(&mut batch))
                        .await
                        .map_err(Ended::from)?;
                }
                tokio::select! {
                    next = producer.next() => next,
                    _ = send.stopped() => {
                        return Err(Ended::Stopped);
                    }
                }
            }
        };
        let frame = match next {
            Some(Ok((ident, _))) if ident < 0 => StreamFrame::End,
            Some(Ok((ident, data))) => {
                counted.item();
                frame_into(
                    &StreamFrame::Item {
                        ident,
                        len: data.len() as u64,
                    },
                    &mut batch,
                );
                if data.len() >= COPY_LIMIT {
                    let header = take_batch(&mut batch);
                    send.write_all_chunks(&mut [header, data])
                        .await
                        .map_err(Ended::from)?;
                } else {
                    batch.extend_from_slice(&data);
                    if batch.len() >= BATCH_FLUSH {
                        send.write_chunk(take_batch(&mut batch))
                            .await
                            .map_err(Ended::from)?;
                    }
                }
                continue;
            }
            Some(Err(failure)) => StreamFrame::Error(log_failure(name, failure)),
            None => StreamFrame::End,
        };
        drop(producer);
        frame_into(&frame, &mut batch);
        let last = if is_mostly_full(&batch) {
            Bytes::from(batch)
        } else {
            Bytes::copy_from_slice(&batch)
        };
        return send.write_chunk(last).await.map_err(Ended::from);
    }
}

/// The batch's bytes, to send; `batch` is left empty (with its capacity) for the next one.
fn take_batch(batch: &mut Vec<u8>) -> Bytes {
    if is_mostly_full(batch) {
        let cap = batch.capacity();
        Bytes::from(std::mem::replace(batch, Vec::with_capacity(cap)))
    } else {
        let chunk = Bytes::copy_from_slice(batch);
        batch.clear();
        chunk
    }
}

/// The transport holds what it is given until the peer acknowledges it, so a batch that fills
/// little of its buffer is copied out rather than handed over: a few hundred bytes in flight
/// on a lossy link must not pin a 80 KiB allocation each.
fn is_mostly_full(batch: &Vec<u8>) -> bool {
    batch.len() * 2 >= batch.capacity()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_batch_is_copied_out_and_its_buffer_kept() {
        let mut batch = Vec::with_capacity(BATCH_FLUSH + COPY_LIMIT);
        batch.extend_from_slice(b"a few bytes");
        let ptr = batch.as_ptr();
        let chunk = take_batch(&mut batch);
        assert_eq!(&chunk[..], b"a few bytes");
        // The chunk owns a copy: the big buffer stays with the batch, empty, for reuse.
        assert_ne!(chunk.as_ptr(), ptr);
        assert!(batch.is_empty());
        assert_eq!(batch.as_ptr(), ptr);
        assert!(batch.capacity() >= BATCH_FLUSH + COPY_LIMIT);
    }

    #[test]
    fn a_full_batch_is_handed_over_without_a_copy() {
        let mut batch = vec![7u8; BATCH_FLUSH];
        let ptr = batch.as_ptr();
        let chunk = take_batch(&mut batch);
        assert_eq!(chunk.len(), BATCH_FLUSH);
        assert_eq!(chunk.as_ptr(), ptr);
        assert!(batch.is_empty());
        assert!(batch.capacity() >= BATCH_FLUSH);
    }
}

//! The wire protocol by hand, for tests that play a hostile peer: frames in and out of raw
//! quinn streams.

use bytes::Bytes;
use quicswarm::proto::codec;

/// The frame of `value`.
pub fn frame<T: serde::Serialize>(value: &T) -> Bytes {
    Bytes::from(codec::encode_to_vec(value).expect("test messages encode"))
}

/// The next frame (at most 16 MiB) from `recv`, with `buf` holding what was read beyond the
/// last one; `None` when the stream ends or a frame does not decode.
pub async fn read_frame<T: serde::de::DeserializeOwned>(
    recv: &mut quinn::RecvStream,
    buf: &mut Vec<u8>,
) -> Option<T> {
    loop {
        match codec::decode::<T>(buf, 16 << 20) {
            Ok((v, used)) => {
                buf.drain(..used);
                return Some(v);
            }
            Err(codec::DecodeError::Incomplete { .. }) => {}
            Err(_) => return None,
        }
        let chunk = recv.read_chunk(1 << 16, true).await.ok()??;
        buf.extend_from_slice(&chunk.bytes);
    }
}

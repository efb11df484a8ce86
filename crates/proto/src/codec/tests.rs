//! Varints, frames and messages: round trips, exact bytes and hostile lengths.

use super::*;
use crate::*;

fn frame<T: Serialize>(msg: &T) -> Vec<u8> {
    encode_to_vec(msg).unwrap()
}

fn roundtrip<T>(msg: T, bytes: &[u8])
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    assert_eq!(frame(&msg), bytes, "encoding of {msg:?}");
    let (back, used) = decode::<T>(bytes, 1 << 20).unwrap();
    assert_eq!(back, msg);
    assert_eq!(used, bytes.len());
}

#[test]
fn varint_len_is_what_put_varint_writes() {
    for v in [
        0,
        1,
        127,
        128,
        300,
        16_383,
        16_384,
        u64::from(u32::MAX),
        u64::MAX,
    ] {
        let mut out = Vec::new();
        put_varint(v, &mut out);
        assert_eq!(varint_len(v), out.len(), "{v}");
    }
}

#[test]
fn encode_to_vec_allocates_exactly() {
    // Exact capacity lets `Bytes::from` take the vector over without a second allocation.
    for len in [0, 100, 200, 20_000] {
        let v = encode_to_vec(&Request::Ping {
            nonce: 1 << (len % 60),
        })
        .unwrap();
        assert_eq!(v.len(), v.capacity());
        let big = encode_to_vec(&vec![7u8; len]).unwrap();
        assert_eq!(big.len(), big.capacity(), "{len}");
    }
}

// Byte vectors pin the wire format: a change here is a protocol change.
#[test]
fn hello_bytes() {
    roundtrip(
        Hello {
            version: 1,
            name: "pi".into(),
        },
        &[4, 1, 2, b'p', b'i'],
    );
}

#[test]
fn hello_reply_bytes() {
    roundtrip(
        HelloReply::Welcome(Welcome {
            handler_id: 7,
            pool_used: 1,
            pool_size: 5,
            max_frame_len: 300,
            subroutines: vec![SubroutineInfo {
                name: "e".into(),
                kind: SubroutineKind::Sink,
                replay_safe: true,
            }],
        }),
        &[11, 0, 7, 1, 5, 0xac, 0x02, 1, 1, b'e', 2, 1],
    );
    roundtrip(
        HelloReply::Refused {
            code: ErrorCode::PoolFull,
            pool_size: 5,
            message: "x".into(),
        },
        &[5, 1, 3, 5, 1, b'x'],
    );
}

#[test]
fn request_bytes() {
    roundtrip(Request::Ping { nonce: 300 }, &[3, 0, 0xac, 0x02]);
    roundtrip(
        Request::Call {
            name: "ab".into(),
            args: Args::postcard(vec![9]),
            deadline_ms: Some(5),
        },
        &[9, 1, 2, b'a', b'b', 0, 1, 9, 1, 5],
    );
    roundtrip(
        Request::Stream {
            name: "c".into(),
            args: Args::json("1"),
            resume_after: Some(-1),
            options: StreamOptions {
                priority: -1,
                delivery: Delivery::Latest { id: 7 },
                max_age_ms: Some(100),
            },
        },
        &[13, 2, 1, b'c', 1, 1, b'1', 1, 1, 1, 1, 7, 1, 100],
    );
    roundtrip(
        Request::Send {
            name: "s".into(),
            args: Args::postcard(vec![]),
            len: None,
            deadline_ms: None,
        },
        &[7, 3, 1, b's', 0, 0, 0, 0],
    );
    // Longer arguments: a two-byte length, then the bytes as they are.
    let mut long = vec![0, 0xc8, 0x01];
    long.extend([7u8; 200]);
    assert_eq!(
        postcard::to_stdvec(&Args::postcard(vec![7; 200])).unwrap(),
        long
    );
    assert_eq!(
        postcard::from_bytes::<Args>(&long).unwrap(),
        Args::postcard(vec![7; 200])
    );
    // Past the stack buffer of `encode`: the same frame as `encode_to_vec`, appended.
    let big = Request::Call {
        name: "n".into(),
        args: Args::postcard(vec![7; 200]),
        deadline_ms: None,
    };
    let mut out = vec![0xee];
    encode(&big, &mut out).unwrap();
    assert_eq!(out[0], 0xee);
    assert_eq!(out[1..], encode_to_vec(&big).unwrap()[..]);
    assert_eq!(body_to_vec(&Args::postcard(vec![7; 200])).unwrap(), long);
    roundtrip(Request::CloseHandler, &[1, 4]);
    roundtrip(Request::CloseGateway, &[1, 5]);
}

#[test]
fn response_bytes() {
    roundtrip(Response::Pong { nonce: 1 }, &[2, 0, 1]);
    roundtrip(Response::Value { len: 128 }, &[3, 1, 0x80, 0x01]);
    roundtrip(Response::Count { value: -2 }, &[2, 2, 3]);
    roundtrip(Response::Accepted, &[1, 3]);
    roundtrip(Response::Done, &[1, 4]);
    roundtrip(
        Response::Error(ErrorReply::new(ErrorCode::UnknownSubroutine, "n")),
        &[4, 5, 4, 1, b'n'],
    );
}

#[test]
fn stream_frame_bytes() {
    roundtrip(StreamFrame::Item { ident: 3, len: 2 }, &[3, 0, 6, 2]);
    roundtrip(StreamFrame::End, &[1, 1]);
    roundtrip(
        StreamFrame::Error(ErrorReply::new(ErrorCode::SubroutineFailed, "")),
        &[3, 2, 6, 0],
    );
}

#[test]
fn file_message_bytes() {
    use crate::transfer::*;
    let entry = FileEntry {
        path: "a".into(),
        size: 2,
        mtime: Mtime { secs: 1, nanos: 3 },
        mode: 0o644,
        hash: None,
    };
    roundtrip(
        Request::List {
            root: "r".into(),
            selector: Selector::all(),
            hash: true,
        },
        &[9, 6, 1, b'r', 0, 0, 0, 0, 1, 1],
    );
    roundtrip(
        Request::Get {
            root: "r".into(),
            items: vec![GetItem {
                path: "a".into(),
                range: Some(ByteRange {
                    index: 1,
                    offset: 4,
                    len: 4,
                }),
            }],
        },
        &[10, 7, 1, b'r', 1, 1, b'a', 1, 1, 4, 4],
    );
    roundtrip(
        Response::Needs(vec![
            Need::Skip,
            Need::Whole,
            Need::Ranges(vec![RangeRun { first: 2, count: 3 }]),
        ]),
        &[8, 6, 3, 0, 1, 2, 1, 2, 3],
    );
    roundtrip(Response::Stored(vec![None]), &[3, 7, 1, 0]);
    roundtrip(
        ListFrame::Entries(vec![entry]),
        &[10, 0, 1, 1, b'a', 2, 2, 3, 0xa4, 0x03, 0],
    );
    roundtrip(ListFrame::End { skipped: 5 }, &[2, 1, 5]);
    roundtrip(
        FileFrame::Data {
            index: 0,
            len: 2,
            size: 2,
            mtime: Mtime { secs: 1, nanos: 3 },
            mode: 0o644,
        },
        &[8, 0, 0, 2, 2, 2, 3, 0xa4, 0x03],
    );
    roundtrip(FileFrame::End, &[1, 3]);
    let mut hash_frame = vec![33, 1];
    hash_frame.extend([7u8; 32]);
    roundtrip(FileFrame::Hash([7; 32]), &hash_frame);
}

#[test]
fn too_large_is_refused_before_the_body_arrives() {
    let mut buf = Vec::new();
    put_varint(1 << 30, &mut buf);
    assert_eq!(
        decode::<Request>(&buf, 1024),
        Err(DecodeError::TooLarge {
            len: 1 << 30,
            max: 1024
        })
    );
}

#[test]
fn incomplete_and_invalid() {
    let full = frame(&Request::Ping { nonce: 5 });
    for cut in 0..full.len() {
        assert!(matches!(
            decode::<Request>(&full[..cut], 64),
            Err(DecodeError::Incomplete { .. })
        ));
    }
    // Unknown request tag.
    assert!(matches!(
        decode::<Request>(&[1, 99], 64),
        Err(DecodeError::Invalid(_))
    ));
    // Trailing bytes inside the frame.
    assert!(matches!(
        decode::<Request>(&[2, 4, 0], 64),
        Err(DecodeError::Invalid(_))
    ));
    // Over-long varint.
    assert!(matches!(
        get_varint(&[0xff; 11]),
        Err(DecodeError::Invalid(_))
    ));
}

#[test]
fn varint_edges() {
    for v in [0, 1, 127, 128, 16_383, 16_384, u32::MAX as u64, u64::MAX] {
        let mut buf = Vec::new();
        put_varint(v, &mut buf);
        assert_eq!(get_varint(&buf).unwrap(), Some((v, buf.len())));
    }
    // 2^64 does not fit.
    let mut over = vec![0x80; 9];
    over.push(0x02);
    assert!(get_varint(&over).is_err());
}

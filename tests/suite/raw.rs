//! Raw QUIC streams on a client's connection, below the library: a frame over the limit,
//! garbage, an unknown tag. The gateway answers each with a typed error and serves on.

use quicswarm::{proto, ErrorCode};
use quicswarm_tests::{spawn_gateway, within};

/// Raw QUIC streams on a client's connection: a frame over the limit, garbage, an unknown tag.
#[tokio::test]
async fn oversized_and_malformed_frames_reset_with_a_code() {
    let gw = spawn_gateway(quicswarm_tests::small_frames).await;
    let client = gw.client().await;
    let conn = client.connection().quic().unwrap().clone();

    // Announce a 1 GiB frame: refused before the body arrives.
    let (mut send, mut recv) = within("open", conn.open_bi()).await.unwrap();
    let mut header = Vec::new();
    proto::codec::put_varint(1 << 30, &mut header);
    send.write_all(&header).await.unwrap();
    let reply = within("reply", recv.read_to_end(1 << 16)).await.unwrap();
    let (response, _) = proto::codec::decode::<proto::Response>(&reply, 1 << 16).unwrap();
    match response {
        proto::Response::Error(e) => assert_eq!(e.code, ErrorCode::FrameTooLarge),
        other => panic!("expected FrameTooLarge, got {other:?}"),
    }
    let stopped = within("stop_sending", send.stopped()).await.unwrap();
    assert_eq!(
        stopped.map(|c| c.into_inner()),
        Some(u64::from(ErrorCode::FrameTooLarge.to_u32()))
    );

    // Unknown request tag.
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&[1, 200]).await.unwrap();
    send.finish().unwrap();
    let reply = within("reply", recv.read_to_end(1 << 16)).await.unwrap();
    let (response, _) = proto::codec::decode::<proto::Response>(&reply, 1 << 16).unwrap();
    assert!(matches!(response, proto::Response::Error(e) if e.code == ErrorCode::Protocol));

    // Truncated frame: the stream ends inside it.
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&[10, 1, 2]).await.unwrap();
    send.finish().unwrap();
    let reply = within("reply", recv.read_to_end(1 << 16)).await.unwrap();
    let (response, _) = proto::codec::decode::<proto::Response>(&reply, 1 << 16).unwrap();
    assert!(matches!(response, proto::Response::Error(e) if e.code == ErrorCode::Protocol));

    // The library client on the same connection is still served.
    within("ping", client.ping()).await.unwrap();
}

//! Property tests: the decoder never panics on arbitrary bytes, and every message round-trips.

use proptest::prelude::*;
use quicswarm_proto::{codec, Args, ErrorCode, ErrorReply, Request, Response, StreamFrame};

fn any_args() -> impl Strategy<Value = Args> {
    (any::<bool>(), proptest::collection::vec(any::<u8>(), 0..64)).prop_map(|(json, bytes)| {
        if json {
            Args {
                encoding: quicswarm_proto::ArgsEncoding::Json,
                bytes,
            }
        } else {
            Args::postcard(bytes)
        }
    })
}

fn any_request() -> impl Strategy<Value = Request> {
    prop_oneof![
        any::<u64>().prop_map(|nonce| Request::Ping { nonce }),
        (".{0,16}", any_args(), any::<Option<u32>>()).prop_map(|(name, args, deadline_ms)| {
            Request::Call {
                name,
                args,
                deadline_ms,
            }
        }),
        (".{0,16}", any_args(), any::<Option<i64>>()).prop_map(|(name, args, resume_after)| {
            Request::Stream {
                options: Default::default(),
                name,
                args,
                resume_after,
            }
        }),
        (".{0,16}", any_args(), any::<Option<u64>>()).prop_map(|(name, args, len)| Request::Send {
            deadline_ms: None,
            name,
            args,
            len
        }),
        Just(Request::CloseHandler),
        Just(Request::CloseGateway),
    ]
}

proptest! {
    #[test]
    fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256), max in 0usize..512) {
        let _ = codec::decode::<Request>(&bytes, max);
        let _ = codec::decode::<Response>(&bytes, max);
        let _ = codec::decode::<StreamFrame>(&bytes, max);
        let _ = codec::decode::<quicswarm_proto::Hello>(&bytes, max);
        let _ = codec::decode::<quicswarm_proto::HelloReply>(&bytes, max);
    }

    #[test]
    fn requests_round_trip(req in any_request()) {
        let frame = codec::encode_to_vec(&req).unwrap();
        let (back, used) = codec::decode::<Request>(&frame, 1 << 20).unwrap();
        prop_assert_eq!(back, req);
        prop_assert_eq!(used, frame.len());
    }

    #[test]
    fn frames_round_trip(ident in any::<i64>(), len in any::<u64>(), code in 0u32..20, msg in ".{0,32}") {
        for f in [StreamFrame::Item { ident, len }, StreamFrame::End,
                  StreamFrame::Error(ErrorReply::new(ErrorCode::from(code), msg.clone()))] {
            let frame = codec::encode_to_vec(&f).unwrap();
            let (back, _) = codec::decode::<StreamFrame>(&frame, 1 << 20).unwrap();
            prop_assert_eq!(back, f);
        }
    }

    #[test]
    fn truncations_are_incomplete(req in any_request()) {
        let frame = codec::encode_to_vec(&req).unwrap();
        for cut in 0..frame.len() {
            let is_incomplete = matches!(
                codec::decode::<Request>(&frame[..cut], 1 << 20),
                Err(codec::DecodeError::Incomplete { .. })
            );
            prop_assert!(is_incomplete);
        }
    }
}

proptest! {
    /// The path validator never panics, and what it accepts cannot escape: no absolute form,
    /// no `..`, no empty component, no backslash or NUL.
    #[test]
    fn path_validator_accepts_only_confined_paths(path in "\\PC{0,40}") {
        if let Ok(parts) = quicswarm_proto::path::validate(&path) {
            prop_assert!(!path.starts_with('/'));
            prop_assert!(!path.contains('\\') && !path.contains('\0'));
            for p in parts {
                prop_assert!(!p.is_empty() && p != "." && p != "..");
                prop_assert!(!p.contains(':'));
            }
        }
    }

    #[test]
    fn path_validator_on_separator_heavy_input(parts in proptest::collection::vec(prop_oneof![
        Just("..".to_string()), Just(".".to_string()), Just(String::new()), "[a-z]{1,5}",
        Just("C:".to_string()), Just("\\\\".to_string())], 1..6)) {
        let path = parts.join("/");
        let ok = quicswarm_proto::path::validate(&path).is_ok();
        let clean = parts.iter().all(|p| !p.is_empty() && p != "." && p != ".." && p.chars().all(|c| c.is_ascii_lowercase()));
        prop_assert_eq!(ok, clean, "{:?}", path);
    }
}

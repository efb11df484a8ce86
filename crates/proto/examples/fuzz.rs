//! A mutation fuzzer that runs on the stable toolchain: feeds the protocol decoders and the
//! path validator mutated valid messages and random bytes for a while, and stops at the first
//! panic, saving the input. (cargo-fuzz needs a nightly toolchain, which this project does not
//! assume.)
//!
//! ```text
//! cargo run --release -p quicswarm-proto --example fuzz -- 60        # seconds
//! scripts/fuzz.sh 600
//! ```

use std::{
    panic::{catch_unwind, AssertUnwindSafe},
    time::{Duration, Instant},
};

use quicswarm_proto::{
    codec, datagram, path,
    transfer::{FileEntry, FileFrame, GetItem, ListFrame, Mtime, Selector},
    Args, Delivery, ErrorCode, ErrorReply, Hello, HelloReply, Request, Response, StreamFrame,
    StreamOptions,
};
use rand::{rngs::StdRng, Rng, SeedableRng};

/// Valid frames to start mutating from.
fn seeds() -> Vec<Vec<u8>> {
    let entry = FileEntry {
        path: "a/b.log".into(),
        size: 9,
        mtime: Mtime { secs: 1, nanos: 2 },
        mode: 0o644,
        hash: Some([3; 32]),
    };
    let mut out = vec![
        codec::encode_to_vec(&Hello {
            version: 1,
            name: "fuzz".into(),
        }),
        codec::encode_to_vec(&HelloReply::Refused {
            code: ErrorCode::PoolFull,
            pool_size: 5,
            message: "x".into(),
        }),
        codec::encode_to_vec(&Request::Call {
            name: "echo".into(),
            args: Args::json("\"x\""),
            deadline_ms: Some(9),
        }),
        codec::encode_to_vec(&Request::Stream {
            name: "s".into(),
            args: Args::postcard(vec![1, 2]),
            resume_after: Some(4),
            options: StreamOptions {
                priority: 3,
                delivery: Delivery::Latest { id: 2 },
                max_age_ms: Some(50),
            },
        }),
        codec::encode_to_vec(&Request::List {
            root: "logs".into(),
            selector: Selector::all(),
            hash: true,
        }),
        codec::encode_to_vec(&Request::Get {
            root: "r".into(),
            items: vec![GetItem {
                path: "a".into(),
                range: None,
            }],
        }),
        codec::encode_to_vec(&Response::Error(ErrorReply::new(
            ErrorCode::Integrity,
            "bad",
        ))),
        codec::encode_to_vec(&StreamFrame::Item {
            ident: -5,
            len: 100,
        }),
        codec::encode_to_vec(&ListFrame::Entries(vec![entry])),
        codec::encode_to_vec(&FileFrame::Hash([7; 32])),
    ]
    .into_iter()
    .map(|r| r.unwrap_or_default())
    .collect::<Vec<_>>();
    let mut dg = datagram::header(3, -1, 1_000);
    dg.extend_from_slice(b"payload");
    out.push(dg);
    out.push(b"logs/2024/../x".to_vec());
    out
}

fn mutate(rng: &mut StdRng, input: &mut Vec<u8>, pool: &[Vec<u8>]) {
    for _ in 0..rng.gen_range(1..4) {
        match rng.gen_range(0..6) {
            0 if !input.is_empty() => {
                let i = rng.gen_range(0..input.len());
                input[i] ^= 1 << rng.gen_range(0..8);
            }
            1 if !input.is_empty() => {
                let i = rng.gen_range(0..input.len());
                input[i] = rng.gen();
            }
            2 => {
                let at = rng.gen_range(0..=input.len());
                let n = rng.gen_range(1..8);
                let bytes: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
                input.splice(at..at, bytes);
            }
            3 if !input.is_empty() => {
                let cut = rng.gen_range(0..input.len());
                input.truncate(cut);
            }
            4 => {
                let other = &pool[rng.gen_range(0..pool.len())];
                let at = rng.gen_range(0..=input.len());
                input.splice(at..at, other.iter().copied());
            }
            _ => {
                // Interesting values: huge lengths, 0xff runs.
                let at = rng.gen_range(0..=input.len());
                let v: &[u8] =
                    [&[0xff; 10][..], &[0x80; 9][..], &[0][..], &[0x7f][..]][rng.gen_range(0..4)];
                input.splice(at..at, v.iter().copied());
            }
        }
    }
}

fn exercise(input: &[u8]) {
    let _ = codec::decode::<Request>(input, 1 << 20);
    let _ = codec::decode::<Response>(input, 1 << 20);
    let _ = codec::decode::<StreamFrame>(input, 1 << 20);
    let _ = codec::decode::<HelloReply>(input, 1 << 20);
    let _ = codec::decode::<Hello>(input, 64);
    let _ = codec::decode::<ListFrame>(input, 1 << 20);
    let _ = codec::decode::<FileFrame>(input, 1 << 20);
    let _ = datagram::decode(input);
    let _ = path::validate(&String::from_utf8_lossy(input));
}

fn main() {
    let seconds: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10);
    let seed: u64 = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(rand::random);
    let mut rng = StdRng::seed_from_u64(seed);
    let pool = seeds();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut runs = 0u64;
    std::panic::set_hook(Box::new(|_| {}));
    while Instant::now() < deadline {
        for _ in 0..1000 {
            let mut input = if rng.gen_bool(0.1) {
                (0..rng.gen_range(0..64)).map(|_| rng.gen()).collect()
            } else {
                pool[rng.gen_range(0..pool.len())].clone()
            };
            mutate(&mut rng, &mut input, &pool);
            if catch_unwind(AssertUnwindSafe(|| exercise(&input))).is_err() {
                let file = format!("fuzz-crash-{seed}-{runs}.bin");
                let _ = std::fs::write(&file, &input);
                eprintln!("panic on input {input:?}; saved to {file}");
                std::process::exit(1);
            }
            runs += 1;
        }
    }
    println!("{runs} inputs in {seconds} s (seed {seed}): no panic");
}

//! The emulator with real packets through real namespaces. Needs root; skipped (with a message)
//! otherwise. Tolerances are stated beside each check: the machine is shared and noisy, so they
//! are wide enough for scheduling noise and narrow enough to catch a broken model.

use std::{
    net::{SocketAddr, UdpSocket},
    path::Path,
    time::{Duration, Instant},
};

use linkem::{DirSpec, Link, LinkSpec, Loss, Side};

const PORT: u16 = 7_000;

fn skip() -> bool {
    if linkem::can_run() {
        return false;
    }
    eprintln!("skipped: bringing a link up needs root and /dev/net/tun (CI runs as root)");
    true
}

/// A UDP socket bound on `side` of the link.
fn bind(link: &Link, side: Side) -> UdpSocket {
    let addr = SocketAddr::new(link.addr(side), PORT);
    let socket = link
        .spawn_in(side, move || UdpSocket::bind(addr))
        .join()
        .unwrap()
        .unwrap()
        .unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    socket
}

/// Receives until 500 ms of silence (at most `max` datagrams); returns (count, first, last).
fn drain(socket: &UdpSocket, max: usize) -> (usize, Option<Instant>, Option<Instant>) {
    let mut buf = [0u8; 2048];
    let (mut n, mut first, mut last) = (0, None, None);
    while n < max {
        match socket.recv(&mut buf) {
            Ok(_) => {
                n += 1;
                first.get_or_insert_with(Instant::now);
                last = Some(Instant::now());
            }
            Err(_) => break,
        }
    }
    (n, first, last)
}

#[test]
fn delay_and_jitter_shape_the_round_trip() {
    if skip() {
        return;
    }
    let link = Link::up(LinkSpec::symmetric(DirSpec {
        delay: Duration::from_millis(20),
        jitter: Duration::from_millis(5),
        ..DirSpec::default()
    }))
    .unwrap();
    let (a, b) = (bind(&link, Side::A), bind(&link, Side::B));
    let to_b = SocketAddr::new(link.addr(Side::B), PORT);
    let echo = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        for _ in 0..200 {
            let Ok((n, from)) = b.recv_from(&mut buf) else {
                break;
            };
            b.send_to(&buf[..n], from).unwrap();
        }
    });
    let mut rtts = Vec::new();
    for i in 0..100u32 {
        let sent = Instant::now();
        a.send_to(&i.to_be_bytes(), to_b).unwrap();
        let mut buf = [0u8; 64];
        let n = a.recv(&mut buf).expect("echo within 500 ms");
        assert_eq!(&buf[..n], &i.to_be_bytes());
        rtts.push(sent.elapsed().as_secs_f64() * 1e3);
    }
    drop(a);
    echo.join().unwrap();
    rtts.sort_by(f64::total_cmp);
    let (min, median, p98, max) = (rtts[0], rtts[50], rtts[97], rtts[99]);
    eprintln!("rtt ms: min {min:.1} median {median:.1} p98 {p98:.1} max {max:.1}");
    // Two directions of 20 ± 5 ms: 30..50 ms, plus a few ms of scheduling. On this shared VM
    // a thread is now and then preempted for several ms (one round trip of a hundred took
    // 59 ms once in CI; the forwarder has reported releases up to 5.4 ms late): the bound
    // holds to the 98th percentile.
    assert!(min >= 29.5, "min {min}");
    assert!((33.0..=47.0).contains(&median), "median {median}");
    assert!(p98 <= 56.0, "p98 {p98}");
    let c = link.counters();
    assert_eq!(c.a_to_b.lost + c.b_to_a.lost, 0);
    assert!(c.a_to_b.delivered >= 100 && c.b_to_a.delivered >= 100);
}

#[test]
fn loss_and_outage_are_counted_exactly() {
    if skip() {
        return;
    }
    let mut spec = LinkSpec::symmetric(DirSpec::default()).seed(42);
    spec.a_to_b.loss = Loss::Random { rate: 0.1 };
    let link = Link::up(spec).unwrap();
    let names = [
        link.namespace(Side::A).to_owned(),
        link.namespace(Side::B).to_owned(),
    ];
    let (a, b) = (bind(&link, Side::A), bind(&link, Side::B));
    let to_b = SocketAddr::new(link.addr(Side::B), PORT);
    let receiver = std::thread::spawn(move || drain(&b, 10_000).0);
    for i in 0..4_000u32 {
        a.send_to(&i.to_be_bytes(), to_b).unwrap();
        if i % 20 == 19 {
            // Paced so the receiving socket's buffer never overflows: host drops would blur
            // the link's loss.
            std::thread::sleep(Duration::from_micros(500));
        }
    }
    let received = receiver.join().unwrap() as u64;
    let c = link.counters().a_to_b;
    eprintln!("received {received} of 4000; counters {c:?}");
    // 10% ± 1.5% lost: 3,600 ± 60 received (3 standard deviations).
    assert!((3_540..=3_660).contains(&received), "{received}");
    // Exact accounting: everything the link saw was lost or delivered; stray packets the
    // kernel sends on its own (a handful at most) are the only difference with the test's.
    assert_eq!(c.packets, c.lost + c.delivered);
    assert!(c.delivered >= received && c.delivered - received <= 5);
    assert!(c.packets >= 4_000 && c.packets <= 4_005);

    // Down: nothing gets through and every packet is counted as an outage.
    let b = bind_again(&link);
    let to_b = SocketAddr::new(link.addr(Side::B), PORT + 1);
    link.set_down(true);
    for i in 0..100u32 {
        a.send_to(&i.to_be_bytes(), to_b).unwrap();
    }
    assert_eq!(drain(&b, 100).0, 0);
    let outage = link.counters().a_to_b.outage_dropped;
    assert!((100..=105).contains(&outage), "{outage}");
    link.set_down(false);
    a.send_to(b"back", to_b).unwrap();
    assert_eq!(drain(&b, 1).0, 1, "the link carries packets again");

    drop(link);
    for ns in names {
        assert!(!Path::new("/run/netns").join(&ns).exists(), "{ns} left");
    }
}

/// A second receiver on side B (the first moved into its thread).
fn bind_again(link: &Link) -> UdpSocket {
    let addr = SocketAddr::new(link.addr(Side::B), PORT + 1);
    let socket = link
        .spawn_in(Side::B, move || UdpSocket::bind(addr))
        .join()
        .unwrap()
        .unwrap()
        .unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    socket
}

#[test]
fn rate_caps_what_gets_through() {
    if skip() {
        return;
    }
    let mut spec = LinkSpec::symmetric(DirSpec::default());
    spec.a_to_b.rate_bit_s = Some(20_000_000);
    spec.a_to_b.queue = Duration::from_millis(50);
    let link = Link::up(spec).unwrap();
    let (a, b) = (bind(&link, Side::A), bind(&link, Side::B));
    let to_b = SocketAddr::new(link.addr(Side::B), PORT);
    let receiver = std::thread::spawn(move || drain(&b, 100_000));
    // Offer about 40 Mbit/s for 1.5 s: 4 datagrams of 1,200 bytes per millisecond.
    let payload = [7u8; 1_200];
    let start = Instant::now();
    let mut sent = 0u32;
    while start.elapsed() < Duration::from_millis(1_500) {
        let due = (start.elapsed().as_micros() / 250) as u32;
        while sent < due {
            a.send_to(&payload, to_b).unwrap();
            sent += 1;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let (received, first, last) = receiver.join().unwrap();
    let span = last.unwrap() - first.unwrap();
    // IP bytes: payload plus 28 bytes of UDP and IPv4 headers.
    let mbit = received as f64 * 1_228.0 * 8.0 / span.as_secs_f64() / 1e6;
    let c = link.counters().a_to_b;
    eprintln!("sent {sent}, received {received} at {mbit:.1} Mbit/s; counters {c:?}");
    // 20 Mbit/s ± 10%; the excess was tail-dropped, not delivered late.
    assert!((18.0..=22.0).contains(&mbit), "{mbit} Mbit/s");
    assert!(c.queue_dropped > u64::from(sent) / 4, "{c:?}");
    assert_eq!(c.lost, 0);
}

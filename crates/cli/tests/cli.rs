//! The `quicswarm` binary end to end: a gateway process and client commands with `--json`.

mod common;

use std::{
    path::Path,
    process::{Command, Output},
};

use common::{GatewayProcess, BIN};
use serde_json::Value;

fn client(args: &[&str], known: &Path) -> Output {
    Command::new(BIN)
        .args(args)
        .arg("--known-gateways")
        .arg(known)
        .args(["--timeout", "10"])
        .output()
        .expect("run client command")
}

/// Runs a command with `--json` and returns its last stdout line as JSON.
fn json(args: &[&str], known: &Path) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = client(&all, known);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("{args:?}: last line {last:?} is not JSON: {e}"))
}

#[test]
fn client_commands_against_a_gateway_process() {
    let dir = tempfile::tempdir().unwrap();
    let known = dir.path().join("known_gateways");
    let gw = GatewayProcess::start(&dir.path().join("certs"), &[]);
    let addr = gw.addr.as_str();

    let ping = json(&["ping", addr, "--count", "5"], &known);
    assert_eq!(ping["count"], 5);
    assert!(
        ping["p50_us"].as_u64().unwrap() > 0 && ping["p99_us"].as_u64() >= ping["p50_us"].as_u64()
    );
    // Trust on first use wrote the gateway's fingerprint.
    let pins = std::fs::read_to_string(&known).unwrap();
    assert!(
        pins.contains(addr) && pins.contains(&gw.fingerprint),
        "{pins}"
    );

    let call = json(&["call", addr, "echo", r#""hi there""#], &known);
    assert_eq!(call["len"], 8);
    assert_eq!(call["utf8"], "hi there");
    let raw = client(&["call", addr, "echo", r#""raw bytes""#], &known);
    assert_eq!(raw.stdout, b"raw bytes");

    let s = json(
        &["stream", addr, "counter", r#"{"count": 100, "size": 10}"#],
        &known,
    );
    assert_eq!(
        (s["items"].as_u64(), s["bytes"].as_u64()),
        (Some(100), Some(1000))
    );
    assert_eq!(
        (s["first_ident"].as_i64(), s["last_ident"].as_i64()),
        (Some(0), Some(99))
    );
    assert_eq!(s["in_order"], true);
    assert!(s["items_per_s"].as_f64().unwrap() > 0.0);
    let capped = json(
        &[
            "stream",
            addr,
            "counter",
            r#"{"count": 100, "size": 10}"#,
            "--max",
            "5",
        ],
        &known,
    );
    assert_eq!(capped["items"], 5);

    assert_eq!(
        json(&["send", addr, "byte_sum", "--zeros", "1000000"], &known)["result"],
        0
    );
    let file = dir.path().join("ones.bin");
    std::fs::write(&file, vec![1u8; 123_456]).unwrap();
    let sent = json(
        &["send", addr, "byte_sum", "--file", file.to_str().unwrap()],
        &known,
    );
    assert_eq!(sent["result"], 123_456);

    // Errors: non-zero exit, a message on stderr, nothing on stdout.
    let fail = client(&["call", addr, "fail", "--json"], &known);
    assert!(!fail.status.success() && fail.stdout.is_empty());
    assert!(String::from_utf8_lossy(&fail.stderr).contains("always fails"));
    let denied = client(&["close-gateway", addr], &known);
    assert!(!denied.status.success());
    assert!(String::from_utf8_lossy(&denied.stderr).contains("permission denied"));
    let unknown = client(&["call", addr, "nope"], &known);
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown subroutine"));

    // A wrong pin is refused and names both fingerprints.
    let wrong = dir.path().join("wrong_known");
    std::fs::write(&wrong, format!("{addr} sha256:{}\n", "ab".repeat(32))).unwrap();
    let refused = client(&["ping", addr], &wrong);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success()
            && stderr.contains(&gw.fingerprint)
            && stderr.contains(&"ab".repeat(32)),
        "{stderr}"
    );
}

#[test]
fn certs_init_then_ca_trust_and_close_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("pki");
    let made = Command::new(BIN)
        .args(["certs", "init", "--dir"])
        .arg(&certs)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    for f in [
        "ca.pem",
        "ca.key",
        "gateway.pem",
        "gateway.key",
        "client.pem",
        "client.key",
    ] {
        assert!(certs.join(f).exists(), "{f} missing");
    }
    let mut gw = GatewayProcess::start(&certs, &["--allow-close"]);
    let ca = certs.join("ca.pem");
    let out = Command::new(BIN)
        .args(["ping", &gw.addr, "--json", "--ca"])
        .arg(&ca)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let closed = Command::new(BIN)
        .args(["close-gateway", &gw.addr, "--json", "--ca"])
        .arg(&ca)
        .output()
        .unwrap();
    assert!(
        closed.status.success(),
        "{}",
        String::from_utf8_lossy(&closed.stderr)
    );
    assert!(
        gw.wait_exit(),
        "the gateway process should exit after close-gateway"
    );
}

#[test]
fn files_ls_get_put() {
    let dir = tempfile::tempdir().unwrap();
    let known = dir.path().join("known_gateways");
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("a.log"), b"alpha").unwrap();
    std::fs::write(src.join("sub/b.log"), vec![7u8; 300_000]).unwrap();
    std::fs::write(src.join("c.txt"), b"gamma").unwrap();
    let serve = format!("data={}", src.display());
    let upload = dir.path().join("uploads");
    let upload_flag = upload.display().to_string();
    let gw = GatewayProcess::start(
        &dir.path().join("certs"),
        &["--serve", &serve, "--upload-dir", &upload_flag],
    );
    let addr = gw.addr.as_str();

    let ls = json(&["ls", addr, "data", "--glob", "**/*.log"], &known);
    let paths: Vec<&str> = ls["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, vec!["a.log", "sub/b.log"]);
    assert_eq!(ls["entries"][1]["size"], 300_000);

    let dest = dir.path().join("dest");
    let dest_s = dest.display().to_string();
    let got = json(&["get", addr, "data", &dest_s, "--swarm", "2"], &known);
    assert_eq!(
        (
            got["files"].as_u64(),
            got["bytes"].as_u64(),
            got["skipped"].as_u64()
        ),
        (Some(3), Some(300_010), Some(0))
    );
    assert!(got["mb_per_s"].as_f64().is_some() && got["files_per_s"].as_f64().is_some());
    assert_eq!(
        std::fs::read(dest.join("sub/b.log")).unwrap(),
        vec![7u8; 300_000]
    );
    let again = json(&["get", addr, "data", &dest_s, "a.log"], &known);
    assert_eq!(
        (again["files"].as_u64(), again["skipped"].as_u64()),
        (Some(0), Some(1))
    );

    let put = json(
        &["put", addr, "robot1", src.to_str().unwrap(), "--swarm", "2"],
        &known,
    );
    assert_eq!(put["files"], 3);
    assert_eq!(
        std::fs::read(upload.join("robot1/src/a.log")).unwrap(),
        b"alpha"
    );

    let refused = client(&["put", addr, "../escape", src.to_str().unwrap()], &known);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("refused path"));
}

#[test]
fn demo_runs() {
    let out = Command::new(BIN).args(["demo", "--json"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(report["pool_full"], true);
    assert_eq!(report["aborted_after"], 3);
    assert!(report["stream_1k_items_per_s"].as_f64().unwrap() > 0.0);
}

#[test]
fn mutual_tls_with_issued_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    let run = |args: &[&str]| Command::new(BIN).args(args).output().unwrap();
    let pki_s = pki.to_str().unwrap();
    assert!(run(&["certs", "init", "--dir", pki_s]).status.success());
    let issued = run(&["certs", "client", "robot7", "--dir", pki_s]);
    assert!(
        issued.status.success(),
        "{}",
        String::from_utf8_lossy(&issued.stderr)
    );
    assert!(pki.join("robot7.pem").exists() && pki.join("robot7.key").exists());
    let ca = pki.join("ca.pem");
    let gw = GatewayProcess::start(&pki, &["--client-ca", ca.to_str().unwrap()]);
    let ca_s = ca.to_str().unwrap();
    let cert = pki.join("robot7.pem");
    let key = pki.join("robot7.key");
    let with = run(&[
        "ping",
        &gw.addr,
        "--ca",
        ca_s,
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "--json",
    ]);
    assert!(
        with.status.success(),
        "{}",
        String::from_utf8_lossy(&with.stderr)
    );
    let without = run(&["ping", &gw.addr, "--ca", ca_s, "--timeout", "5"]);
    assert!(
        !without.status.success(),
        "a client without a certificate is refused"
    );
}

#[test]
fn gateway_configuration_file() {
    let dir = tempfile::tempdir().unwrap();
    let known = dir.path().join("known_gateways");
    std::fs::create_dir_all(dir.path().join("logs")).unwrap();
    std::fs::write(dir.path().join("logs/a.log"), b"x").unwrap();
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        "preset = \"wifi\"\n[serve]\nlogs = \"logs\"\n[permissions.default]\nsubroutines = [\"echo\"]\nroots = \"all\"\n",
    )
    .unwrap();
    let gw = GatewayProcess::start(
        &dir.path().join("certs"),
        &["--config", config.to_str().unwrap()],
    );
    let addr = gw.addr.as_str();
    assert_eq!(
        json(&["call", addr, "echo", r#""ok""#], &known)["utf8"],
        "ok"
    );
    let denied = client(&["call", addr, "fail"], &known);
    assert!(String::from_utf8_lossy(&denied.stderr).contains("may not call subroutine"));
    // The root is relative to the configuration file.
    let ls = json(&["ls", addr, "logs"], &known);
    assert_eq!(ls["entries"][0]["path"], "a.log");

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "listen = 5\n").unwrap();
    let out = Command::new(BIN)
        .args(["gateway", "--config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("bad.toml"));
}

#[test]
fn tls_over_tcp_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let known = dir.path().join("known_gateways");
    let gw = GatewayProcess::start(&dir.path().join("certs"), &["--tcp"]);
    let tcp = format!("tcp://{}", gw.addr);

    let ping = json(&["ping", &tcp, "--count", "3"], &known);
    assert_eq!(ping["count"], 3);
    let call = json(&["call", &tcp, "echo", r#""over tcp""#], &known);
    assert_eq!(call["utf8"], "over tcp");
    // One pin for the gateway whatever the transport: QUIC finds the pin TCP made.
    let pins = std::fs::read_to_string(&known).unwrap();
    assert_eq!(
        pins.lines().filter(|l| l.contains(&gw.fingerprint)).count(),
        1
    );
    let call = json(&["call", &gw.addr, "echo", r#""over quic""#], &known);
    assert_eq!(call["utf8"], "over quic");
    assert_eq!(std::fs::read_to_string(&known).unwrap(), pins);
}

#[test]
fn metrics_from_the_command_line() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let known = dir.path().join("known_gateways");
    let gw = GatewayProcess::start(&dir.path().join("certs"), &["--metrics", "127.0.0.1:0"]);
    let metrics = gw
        .metrics
        .clone()
        .expect("the gateway printed its metrics address");

    let ping = json(&["ping", &gw.addr, "--count", "3"], &known);
    assert_eq!(ping["count"], 3);
    let mut socket = std::net::TcpStream::connect(&metrics).unwrap();
    socket
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    write!(socket, "GET /metrics HTTP/1.1\r\nHost: {metrics}\r\n\r\n").unwrap();
    let mut reply = String::new();
    socket.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    // The ping client's pings: each one an operation.
    let pings = reply
        .lines()
        .find_map(|l| l.strip_prefix("quicswarm_operations_total{kind=\"ping\",result=\"ok\"} "))
        .and_then(|v| v.parse::<u64>().ok());
    assert!(pings.is_some_and(|n| n >= 3), "{reply}");
}

#[test]
fn sighup_reloads_the_certificate_and_permissions() {
    let dir = tempfile::tempdir().unwrap();
    let (known, known_after) = (
        dir.path().join("known_gateways"),
        dir.path().join("known_after"),
    );
    let certs = dir.path().join("certs");
    let config = dir.path().join("gateway.toml");
    let only_fail = "[permissions.default]\nsubroutines = [\"fail\"]\n";
    std::fs::write(&config, only_fail).unwrap();
    let gw = GatewayProcess::start(&certs, &["--config", config.to_str().unwrap()]);
    let addr = gw.addr.as_str();
    let denied = client(&["call", addr, "echo", r#""hi""#], &known);
    assert!(String::from_utf8_lossy(&denied.stderr).contains("may not call subroutine"));

    // A new certificate and wider permissions, then SIGHUP.
    let fresh = tempfile::tempdir().unwrap();
    let (identity, _) = quicswarm::Identity::load_or_create(fresh.path()).unwrap();
    for file in ["gateway.pem", "gateway.key"] {
        std::fs::copy(fresh.path().join(file), certs.join(file)).unwrap();
    }
    std::fs::write(&config, "[permissions.default]\nsubroutines = \"all\"\n").unwrap();
    gw.hangup();
    let line = gw.line_starting("SIGHUP: reload");
    let new = identity.fingerprint().to_string();
    assert!(line.contains("reloaded") && line.contains(&new), "{line}");
    assert_ne!(new, gw.fingerprint);

    assert_eq!(
        json(&["call", addr, "echo", r#""hi""#], &known_after)["utf8"],
        "hi"
    );
    let pinned = std::fs::read_to_string(&known_after).unwrap();
    assert!(pinned.contains(&new), "{pinned}");
    let old_pin = client(&["ping", addr], &known);
    assert!(
        !old_pin.status.success()
            && String::from_utf8_lossy(&old_pin.stderr).contains(&gw.fingerprint),
        "the old pin must be refused: {}",
        String::from_utf8_lossy(&old_pin.stderr)
    );

    // A configuration that does not parse: the gateway says so and serves as before.
    std::fs::write(&config, "listen = 5\n").unwrap();
    gw.hangup();
    let line = gw.line_starting("SIGHUP: reload");
    assert!(
        line.contains("failed") && line.contains("gateway.toml"),
        "{line}"
    );
    assert_eq!(
        json(&["call", addr, "echo", r#""still""#], &known_after)["utf8"],
        "still"
    );
}

#[test]
fn qlog_dir_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let known = dir.path().join("known_gateways");
    let (gateway_logs, client_logs) = (dir.path().join("gw-qlog"), dir.path().join("ctl-qlog"));
    let gw = GatewayProcess::start(
        &dir.path().join("certs"),
        &["--qlog-dir", gateway_logs.to_str().unwrap()],
    );
    let ping = json(
        &[
            "ping",
            &gw.addr,
            "--count",
            "2",
            "--qlog-dir",
            client_logs.to_str().unwrap(),
        ],
        &known,
    );
    assert_eq!(ping["count"], 2);
    // The client process has ended: its file is complete.
    let files: Vec<_> = std::fs::read_dir(&client_logs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let text = std::fs::read_to_string(&files[0]).unwrap();
    assert!(text.contains("transport:packet_sent"), "{text}");
    // The gateway's file exists from the handshake on (written out when it closes).
    assert_eq!(std::fs::read_dir(&gateway_logs).unwrap().count(), 1);
}

/// Runs `quicswarm fleet FILE ARGS... --json` and returns its JSON lines by gateway, and
/// whether it exited successfully.
fn fleet_json(file: &Path, args: &[&str]) -> (std::collections::HashMap<String, Value>, bool) {
    let out = Command::new(BIN)
        .arg("fleet")
        .arg(file)
        .args(args)
        .args(["--json", "--timeout", "10"])
        .output()
        .expect("run quicswarm fleet");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines = stdout
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}"));
            (v["gateway"].as_str().unwrap_or_default().to_string(), v)
        })
        .collect();
    (lines, out.status.success())
}

#[test]
fn fleet_ping_call_and_get_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(logs.join("day1")).unwrap();
    std::fs::write(logs.join("day1/a.log"), b"alpha").unwrap();
    let serve = format!("logs={}", logs.display());
    let one = GatewayProcess::start(&dir.path().join("c1"), &["--serve", &serve]);
    let two = GatewayProcess::start(&dir.path().join("c2"), &["--serve", &serve]);
    let dead = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let file = dir.path().join("fleet.txt");
    std::fs::write(
        &file,
        format!(
            "# two robots and one that is off\none {} {}\ntwo {} {}\noff {dead_addr} {}\n",
            one.addr, one.fingerprint, two.addr, two.fingerprint, one.fingerprint
        ),
    )
    .unwrap();

    let (pings, all_ok) = fleet_json(&file, &["ping", "--gateway-timeout", "2"]);
    assert!(!all_ok, "a failed gateway makes the command fail");
    assert_eq!(pings.len(), 3, "{pings:?}");
    assert_eq!(pings["one"]["ok"], true);
    assert!(pings["two"]["rtt_us"].as_u64().is_some());
    assert_eq!(pings["off"]["ok"], false);
    assert!(pings["off"]["error"].as_str().is_some());

    // Only the two that answer from here on.
    std::fs::write(
        &file,
        format!(
            "one {} {}\ntwo {} {}\n",
            one.addr, one.fingerprint, two.addr, two.fingerprint
        ),
    )
    .unwrap();
    let (calls, ok) = fleet_json(&file, &["call", "echo", r#""hi""#]);
    assert!(ok);
    assert_eq!(calls["one"]["utf8"], "hi");
    assert_eq!(calls["two"]["utf8"], "hi");

    let dest = dir.path().join("collected");
    let (got, ok) = fleet_json(&file, &["get", "logs", dest.to_str().unwrap()]);
    assert!(ok, "{got:?}");
    assert_eq!(got["one"]["files"], 1);
    for name in ["one", "two"] {
        assert_eq!(
            std::fs::read(dest.join(name).join("day1/a.log")).unwrap(),
            b"alpha"
        );
    }
    let (again, _) = fleet_json(&file, &["get", "logs", dest.to_str().unwrap()]);
    assert_eq!(
        (
            again["two"]["files"].as_u64(),
            again["two"]["skipped"].as_u64()
        ),
        (Some(0), Some(1))
    );
}

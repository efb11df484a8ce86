//! The examples run and do what they say.

use std::process::Command;

#[test]
fn hello_runs() {
    let out = Command::new(env!("CARGO_BIN_EXE_hello")).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("greet -> hello, robot"), "{text}");
    assert!(text.contains("reading 4: temp=20.40"), "{text}");
    assert!(text.contains("store -> 100000"), "{text}");
}

#[test]
fn file_backup_demo_backs_up_and_removes_only_verified_logs() {
    let out = Command::new(env!("CARGO_BIN_EXE_file_backup"))
        .arg("demo")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(report["backed_up"], 50);
    assert_eq!(report["removed"], 50);
    assert!(report["usage"].as_f64().unwrap() > 0.0);
}

fn json_of(bin: &str, args: &[&str]) -> serde_json::Value {
    let out = Command::new(bin).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap()).unwrap()
}

#[test]
fn pi_camera_demo_streams_fresh_frames() {
    let r = json_of(
        env!("CARGO_BIN_EXE_pi_camera"),
        &["demo", "--seconds", "2", "--json"],
    );
    assert!(r["frames"].as_u64().unwrap() >= 30, "{r}");
    assert!(r["fps"].as_f64().unwrap() > 20.0, "{r}");
    assert!(r["age_p99_ms"].as_f64().unwrap() < 1000.0, "{r}");
    assert_eq!(r["reconnects"], 0);
}

#[test]
fn telemetry_demo_carries_every_feed_and_command() {
    let r = json_of(
        env!("CARGO_BIN_EXE_telemetry"),
        &["demo", "--seconds", "2", "--json"],
    );
    for feed in ["imu", "odometry", "battery", "camera"] {
        assert!(
            r["feeds"][feed]["items"].as_u64().unwrap() > 0,
            "{feed}: {r}"
        );
    }
    assert!(r["feeds"]["imu"]["items"].as_u64().unwrap() > 100, "{r}");
    assert!(r["commands_sent"].as_u64().unwrap() >= 10, "{r}");
}

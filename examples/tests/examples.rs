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

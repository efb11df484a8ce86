//! The `linkem` binary: what needs no root.

use std::process::Command;

#[test]
fn profiles_are_listed_by_name() {
    let out = Command::new(env!("CARGO_BIN_EXE_linkem"))
        .arg("profiles")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for (name, rate) in [
        ("L1", "100 Mbit/s"),
        ("L2", "40 Mbit/s"),
        ("L3", "10 Mbit/s"),
    ] {
        let line = text
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} missing from:\n{text}"));
        assert!(line.contains(rate), "{line}");
    }
    assert!(text.lines().any(|l| l.starts_with("L4")), "{text}");
}

#[test]
fn an_unknown_profile_is_refused_with_the_known_ones() {
    let out = Command::new(env!("CARGO_BIN_EXE_linkem"))
        .args(["up", "--profile", "L9", "--seconds", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("L9") && err.contains("L1, L2, L3, L4"),
        "{err}"
    );
}

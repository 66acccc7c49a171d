//! The lab's own tools fail as one line an operator can read: no backtrace, also
//! with RUST_BACKTRACE=1 (the demo shows expected failures this way).
use std::process::Command;

#[test]
fn a_failing_lab_app_says_why_in_one_line_even_with_rust_backtrace() {
    // Port 1 on loopback: nothing listens there, the connect is refused.
    let out = Command::new(env!("CARGO_BIN_EXE_lab-app"))
        .args(["connect", "--to", "127.0.0.1:1", "--bytes", "1"])
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("run lab-app");
    assert!(!out.status.success(), "connect to 127.0.0.1:1 should fail");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.starts_with("lab-app: connect 127.0.0.1:1: ") && stderr.contains("refused"),
        "{stderr}"
    );
    assert!(!stderr.contains("backtrace"), "{stderr}");
}

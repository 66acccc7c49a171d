//! The loopback fast path (sockops + sk_msg): bytes between
//! applications and the agent skip the loopback TCP stack, counted by the kernel;
//! the agent still decides every connection (policy refuses as before) and counts
//! every byte. The fast path is for applications that read with non-blocking
//! sockets (README "Performance": the kernel's sockmap receive path can answer
//! EAGAIN to a blocking reader, and redirected messages have no backpressure):
//! it is off unless `--fast-path annotated` (pods with `ferrymesh.io/fast-path:
//! "true"`) or `all`, and the peers here are iperf3's.
mod common;

use std::time::Duration;

use common::{two_node_lab_with, MIB};
use ferrymesh_tests::{eventually, Lab};
use serde_json::Value;

/// The kernel's fast-path counter `name` on `node`.
fn fast(lab: &Lab, node: &str, name: &str) -> u64 {
    lab.stats(node).unwrap()["ebpf"][name].as_u64().unwrap_or(0)
}

/// A child process killed when dropped.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One iperf3 test of `bytes` from `client` to `pod` (`reverse`: `pod` sends);
/// iperf3's JSON report. Paced at 1 Gbit/s: unpaced, the sender's whole `-n` can
/// sit in a redirected (unbounded) queue when iperf3's end-of-test message
/// overtakes it on the control connection, and the server then counts 0 bytes
/// and closes the data connection under the agent (seen in CI).
fn iperf3(lab: &Lab, pod: &str, bytes: u64, reverse: bool) -> Value {
    let _server = Running(
        lab.spawn_in_pod(pod, "iperf3", &["-s", "-1", "-p", "5201"])
            .expect("iperf3 server (installed by cargo xtask)"),
    );
    eventually(Duration::from_secs(10), "iperf3 to listen", || {
        let out = lab.exec_in(pod, &["ss", "-Hltn", "sport = :5201"]);
        out.ok().filter(|o| !o.trim().is_empty()).ok_or("not yet")
    })
    .expect("iperf3 listening");
    let ip = lab.pod(pod).ip4.to_string();
    let n = bytes.to_string();
    let mut args = vec![
        "-c",
        ip.as_str(),
        "-p",
        "5201",
        "-n",
        n.as_str(),
        "-b",
        "1G",
        "-J",
    ];
    if reverse {
        args.push("-R");
    }
    let out = lab
        .run_in_pod("client", "iperf3", &args)
        .expect("iperf3 client");
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// Bytes the sending end got through, 0 after an error.
fn sent(report: &Value) -> u64 {
    if report["error"].is_string() {
        return 0;
    }
    report["end"]["sum_sent"]["bytes"].as_u64().unwrap_or(0)
}

/// Bytes the receiving end counted (it stops counting at the test's end marker,
/// so a little short of `sent` with `-n`).
fn received(report: &Value) -> u64 {
    report["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0)
}

#[test]
fn same_node_bytes_take_the_fast_path_and_arrive_intact() {
    let lab = two_node_lab_with(&["--fast-path", "all"]);
    let before = fast(&lab, "a", "fast_bytes_redirected");
    let mut delivered = 0;
    for reverse in [false, true] {
        let r = iperf3(&lab, "local-server", 64 * MIB, reverse);
        assert!(
            sent(&r) >= 64 * MIB && received(&r) > 0,
            "reverse={reverse}: {r}"
        );
        delivered += received(&r);
    }
    // Every byte that arrived crossed both hops (app -> agent, agent -> app)
    // without loopback TCP - unless a socket's first send beat its peer into the
    // sockhash, which then takes loopback TCP for its whole life (counted).
    let moved = fast(&lab, "a", "fast_bytes_redirected") - before;
    let passing = fast(&lab, "a", "fast_sockets_passing");
    assert!(
        moved >= 2 * delivered || (passing > 0 && moved > 0),
        "{moved} bytes redirected for {delivered}, {passing} sockets passing"
    );
    // The agent still carried and counted them (when each connection ends).
    lab.wait_stats("a", "the agent to count what it carried", |s| {
        let w = &s["workloads"]["shop/client"];
        w["bytes_sent"].as_u64().unwrap_or(0) + w["bytes_received"].as_u64().unwrap_or(0)
            >= delivered
    })
    .expect("counted");
}

#[test]
fn cross_node_hops_to_and_from_the_agents_take_the_fast_path() {
    let lab = two_node_lab_with(&["--fast-path", "all"]);
    let (a0, b0) = (
        fast(&lab, "a", "fast_bytes_redirected"),
        fast(&lab, "b", "fast_bytes_redirected"),
    );
    // Small: an application that outpaces the agent (bound by TLS here) gets
    // ENOMEM once the agent's socket has too much redirected to it (README).
    let r = iperf3(&lab, "server", 8 * MIB, false);
    assert!(sent(&r) >= 8 * MIB && received(&r) > 0, "{r}");
    // The client's hop into agent a and agent b's delivery to the server.
    assert!(fast(&lab, "a", "fast_bytes_redirected") - a0 >= received(&r));
    assert!(fast(&lab, "b", "fast_bytes_redirected") - b0 >= received(&r));
}

const DENY_SHOP: &str = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-shop, namespace: shop}
spec:
  selector: {matchLabels: {app: local-server}}
  action: DENY
  rules:
  - from: [{source: {namespaces: [shop]}}]
---
"#;

#[test]
fn policy_still_refuses_on_the_fast_path() {
    let mut lab = two_node_lab_with(&["--fast-path", "all"]);
    lab.apply_config(DENY_SHOP).expect("policy");
    let r = iperf3(&lab, "local-server", MIB, false);
    assert!(
        r["error"].is_string(),
        "a denied connection was served: {r}"
    );
    assert_eq!(received(&r), 0, "{r}");
    assert!(
        lab.counter("a", "shop/local-server", "inbound_denied")
            .unwrap()
            >= 1
    );
}

/// The two-node lab with `client` annotated for the fast path, agents given `args`.
fn lab_with_annotated_client(args: &[&str]) -> Lab {
    let mut spec = common::two_node_spec(args);
    for p in spec.pods.iter_mut().filter(|p| p.name == "client") {
        p.annotations
            .push(("ferrymesh.io/fast-path".into(), "true".into()));
    }
    let mut lab = Lab::new(spec).expect("lab");
    lab.start_agents().expect("agents");
    lab
}

#[test]
fn annotated_mode_shortens_only_the_annotated_pods_hops() {
    let lab = lab_with_annotated_client(&["--fast-path", "annotated"]);
    let r = iperf3(&lab, "local-server", 16 * MIB, false);
    assert!(sent(&r) >= 16 * MIB && received(&r) > 0, "{r}");
    // Two connections (iperf3's control and data), each with the client's hop
    // into the agent (two sockets); the delivery to the unannotated server took
    // loopback TCP.
    assert_eq!(fast(&lab, "a", "fast_sockets_added"), 4);
    let moved = fast(&lab, "a", "fast_bytes_redirected");
    assert!(
        moved >= received(&r) && moved < 2 * sent(&r),
        "{moved} bytes redirected for {} sent",
        sent(&r)
    );
}

#[test]
fn off_by_default_even_for_an_annotated_pod() {
    let lab = lab_with_annotated_client(&[]);
    let r = iperf3(&lab, "local-server", 16 * MIB, false);
    assert!(sent(&r) >= 16 * MIB && received(&r) > 0, "{r}");
    assert_eq!(fast(&lab, "a", "fast_sockets_added"), 0);
    assert_eq!(fast(&lab, "a", "fast_bytes_redirected"), 0);
    assert!(lab.agent_log("a").contains("mode=Off active=false"));
}

//! Agent lifecycle: an upgrade (a second agent on the node takes the running one's
//! listening sockets) fails no new connection and resets no established one.
mod common;

use std::time::Duration;

use common::two_node_lab_with;

#[test]
fn an_upgrade_hands_over_without_a_failed_or_reset_connection() {
    let mut lab = two_node_lab_with(&["--drain-seconds", "60"]);
    let _server = lab.server("server", &[8080]).expect("server");
    let to = lab.pod("server").addr4(8080).to_string();
    // A long-lived connection through both agents (client on a, server on b).
    let mut held = lab.app("client", &["hold", "--to", &to]).expect("holder");
    held.expect_line("connected", Duration::from_secs(10))
        .unwrap();
    held.send_line("before").unwrap();
    assert_eq!(
        held.expect_line("echo", Duration::from_secs(10)).unwrap(),
        "echo before"
    );
    // New connections one after another, across both upgrades.
    let churn = lab
        .app("client", &["churn", "--to", &to, "--count", "4000"])
        .expect("churn");
    let mut old_a = lab.begin_upgrade("a").expect("agent a upgraded");
    let mut old_b = lab.begin_upgrade("b").expect("agent b upgraded");
    let r = churn
        .json_result(Duration::from_secs(120))
        .expect("churn result");
    assert_eq!(
        (r["ok"].as_u64(), r["failed"].as_u64()),
        (Some(4000), Some(0)),
        "{r}\n--- replaced agent a ---\n{}\n--- replaced agent b ---\n{}",
        old_a.log_text(),
        old_b.log_text()
    );
    // The new agents served part of it (the upgrades happened during the churn).
    assert!(
        lab.counter("a", "shop/client", "outbound_connected")
            .unwrap()
            >= 1,
        "the new agent on a served none of the churn"
    );
    // The established connection is still served, by the old agents, draining.
    held.send_line("after").unwrap();
    assert_eq!(
        held.expect_line("echo", Duration::from_secs(10)).unwrap(),
        "echo after"
    );
    drop(held);
    for old in [&mut old_a, &mut old_b] {
        let status = old
            .wait_exit(Duration::from_secs(30))
            .expect("the old agent exits");
        assert!(status.success(), "{status}");
        let log = old.log_text();
        assert!(
            log.contains("a new agent took over this node's listeners"),
            "{log}"
        );
        assert!(log.contains("drained; exiting"), "{log}");
    }
    assert!(lab
        .agent_log("b")
        .contains("taking over from the agent running on this node"));
    // Only the new agents serve now.
    let r = lab
        .run_client("client", &["connect", "--to", &to, "--bytes", "4096"])
        .unwrap();
    common::assert_intact(&r, 4096);
}

/// Calls ferrymesh-cni exactly as a container runtime does; (exit ok, stdout JSON).
fn cni(
    lab: &ferrymesh_tests::Lab,
    command: &str,
    pod: &str,
    k8s_namespace: &str,
) -> (bool, serde_json::Value) {
    let netns = lab.pod(pod).netns_path();
    cni_in(lab, command, pod, k8s_namespace, &netns)
}

/// `cni` with CNI_NETNS set to `netns`.
fn cni_in(
    lab: &ferrymesh_tests::Lab,
    command: &str,
    pod: &str,
    k8s_namespace: &str,
    netns: &std::path::Path,
) -> (bool, serde_json::Value) {
    use std::io::Write;
    let bin = ferrymesh_tests::lab::agent_binary()
        .expect("mesh-agent binary")
        .with_file_name("ferrymesh-cni");
    let p = lab.pod(pod);
    let socket = lab.dir.join("state").join(&p.spec.node).join("cni.sock");
    let config = serde_json::json!({
        "cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "ferrymesh-cni",
        "agentSocket": socket,
        "prevResult": {"cniVersion": "1.0.0", "ips": [{"address": format!("{}/24", p.ip4)}]},
    });
    let mut child = std::process::Command::new(bin)
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", format!("sandbox-{pod}"))
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/opt/cni/bin")
        .env(
            "CNI_ARGS",
            format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={k8s_namespace};K8S_POD_NAME={pod}"),
        )
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("ferrymesh-cni");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(config.to_string().as_bytes())
        .expect("config on stdin");
    let out = child.wait_with_output().expect("ferrymesh-cni exits");
    let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.success(), json)
}

#[test]
fn the_cni_plugin_holds_a_new_pod_until_its_agent_has_taken_it() {
    let mut lab = common::two_node_lab();
    let _server = lab.server("server", &[8080]).expect("server");
    let to = lab.pod("server").addr4(8080).to_string();
    let echoed = |lab: &ferrymesh_tests::Lab| {
        lab.run_client("outsider", &["connect", "--to", &to, "--bytes", "1024"])
            .is_ok_and(|r| r["received"] == 1024)
    };
    // `outsider` stands for a new pod of the meshed namespace `shop` whose
    // workload the agent does not know yet.
    assert!(echoed(&lab));
    // Agent down: ADD fails with "try again later", so the runtime retries.
    lab.kill_agent("a").unwrap();
    let (ok, out) = cni(&lab, "ADD", "outsider", "shop");
    assert!(!ok, "{out}");
    assert_eq!(out["code"], 11, "{out}");
    // Agent up: ADD succeeds, passes the previous result on, and from then on the
    // pod sends nothing around the mesh.
    lab.start_agent("a").unwrap();
    let (ok, out) = cni(&lab, "ADD", "outsider", "shop");
    assert!(ok, "{out}");
    assert_eq!(
        out["ips"][0]["address"],
        format!("{}/24", lab.pod("outsider").ip4),
        "{out}"
    );
    assert!(
        !echoed(&lab),
        "a pod held by the CNI plugin went around the mesh"
    );
    assert!(
        lab.stats("a").unwrap()["ebpf"]["connect_blocked"]
            .as_u64()
            .unwrap_or(0)
            >= 1
    );
    // DEL lets go; an ADD for a namespace outside the mesh holds nothing.
    let (ok, out) = cni(&lab, "DEL", "outsider", "shop");
    assert!(ok, "{out}");
    assert!(echoed(&lab));
    let (ok, out) = cni(&lab, "ADD", "outsider", "plain");
    assert!(ok, "{out}");
    assert!(echoed(&lab));
    // A CNI_NETNS that is the node's own namespace is refused, never blocked.
    let node = lab
        .nodes
        .iter()
        .find(|n| n.name == "a")
        .map(|n| std::path::PathBuf::from("/run/netns").join(&n.netns))
        .expect("node a");
    let (ok, out) = cni_in(&lab, "ADD", "outsider", "shop", &node);
    assert!(
        !ok && out["msg"]
            .as_str()
            .is_some_and(|m| m.contains("node's own network namespace")),
        "{out}"
    );
    assert!(echoed(&lab));
    // VERSION, as the spec asks.
    let (ok, out) = cni(&lab, "VERSION", "outsider", "plain");
    assert!(
        ok && out["supportedVersions"]
            .as_array()
            .is_some_and(|v| !v.is_empty()),
        "{out}"
    );
}

const STRICT: &str = r#"apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: strict, namespace: shop}
spec: {mtls: {mode: STRICT}}
---
"#;

/// tcpdump on the lab's fabric bridge, until dropped; the capture's bytes.
struct Capture {
    dump: std::process::Child,
    file: std::path::PathBuf,
}

impl Capture {
    fn start(lab: &ferrymesh_tests::Lab) -> Capture {
        let file = lab.dir.join("lifecycle.pcap");
        let dump = std::process::Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", lab.fabric_netns()))
            .args(["--", "tcpdump", "-i", "br0", "-U", "-s", "0", "-w"])
            .arg(&file)
            .arg("tcp")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("tcpdump (installed by cargo xtask)");
        ferrymesh_tests::eventually(Duration::from_secs(10), "tcpdump to start", || {
            (std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0) >= 24)
                .then_some(())
                .ok_or("not yet")
        })
        .expect("tcpdump");
        Capture { dump, file }
    }

    fn stop(mut self) -> Vec<u8> {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.dump.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        );
        let _ = self.dump.wait();
        std::fs::read(&self.file).unwrap_or_default()
    }
}

#[test]
fn an_upgrade_under_steady_load_fails_nothing_and_leaks_no_plaintext() {
    let mut lab = two_node_lab_with(&["--drain-seconds", "60"]);
    lab.apply_config(STRICT).expect("STRICT applied");
    let _server = lab.server("server", &[8080]).expect("server");
    let to = lab.pod("server").addr4(8080).to_string();
    let capture = Capture::start(&lab);
    // Two meshed pods: a new connection every 10 ms and 50 long-lived ones echoing
    // every 50 ms each; a plaintext probe from outside the mesh toward the STRICT
    // server every 10 ms.
    let steady = |lab: &ferrymesh_tests::Lab, pod: &str, held: &str, text: &str| {
        lab.app(
            pod,
            &[
                "steady",
                "--to",
                &to,
                "--count",
                "500",
                "--every-ms",
                "10",
                "--held",
                held,
                "--text",
                text,
            ],
        )
        .expect("load")
    };
    let client = steady(&lab, "client", "50", "MESHED-CLIENT-MARKER");
    let other = steady(&lab, "other", "0", "MESHED-OTHER-MARKER");
    let probe = steady(&lab, "outsider", "0", "PLAINTEXT-PROBE");
    let mut old_a = lab.begin_upgrade("a").expect("agent a upgraded");
    let mut old_b = lab.begin_upgrade("b").expect("agent b upgraded");
    let wait = |app: ferrymesh_tests::App| {
        app.json_result(Duration::from_secs(120))
            .expect("load result")
    };
    let (client, other, probe) = (wait(client), wait(other), wait(probe));
    for r in [&client, &other] {
        assert_eq!(
            (r["new_ok"].as_u64(), r["new_failed"].as_u64()),
            (Some(500), Some(0)),
            "{r}"
        );
        assert_eq!(
            r["held_failed"], 0,
            "an established connection was reset: {r}"
        );
    }
    assert!(
        client["held_echoes"].as_u64().unwrap_or(0) >= 50,
        "{client}"
    );
    assert_eq!(
        probe["new_ok"], 0,
        "plaintext reached the STRICT pod: {probe}"
    );
    assert_eq!(probe["new_failed"], 500, "{probe}");
    for old in [&mut old_a, &mut old_b] {
        assert!(old
            .wait_exit(Duration::from_secs(60))
            .expect("exits")
            .success());
    }
    let bytes = capture.stop();
    let has = |m: &str| bytes.windows(m.len()).any(|w| w == m.as_bytes());
    assert!(
        has("PLAINTEXT-PROBE"),
        "the capture saw the probe (control)"
    );
    assert!(
        !has("MESHED-CLIENT-MARKER") && !has("MESHED-OTHER-MARKER"),
        "a meshed pod's bytes crossed the fabric in plaintext"
    );
}

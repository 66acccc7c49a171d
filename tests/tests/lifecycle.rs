//! Agent lifecycle: an upgrade (a second agent on the node takes the running one's
//! listening sockets) fails no new connection and resets no established one; a
//! restart (kill -9, or SIGTERM with the control plane down) fails connections only
//! while no agent runs and never lets a meshed pod's byte out in plaintext; the CNI
//! plugin holds new pods until their agent has them; a pod that cannot be enrolled
//! is blocked while its neighbours are served.
mod common;

use std::time::Duration;

use common::two_node_lab_with;
use ferrymesh_tests::{App, Lab};
use serde_json::Value;

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
    // The runtime's retries: ADD fails while the agent is down or starting.
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
    // Agent starting (frozen before it is ready): still "try again later".
    lab.spawn_agent("a").unwrap();
    let pid = nix::unistd::Pid::from_raw(lab.agent_pid("a").expect("agent pid") as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    assert!(!lab.agent_log("a").contains("agent ready"));
    let (ok, out) = cni(&lab, "ADD", "outsider", "shop");
    assert!(!ok, "{out}");
    assert_eq!(out["code"], 11, "{out}");
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    lab.wait_agent_ready("a").unwrap();
    // Agent up: ADD succeeds, passes the previous result on, and from then on the
    // pod sends nothing around the mesh.
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

/// The load: two meshed pods open a new connection every 10 ms with an
/// echo (`client` also holds 50 connections echoing every 50 ms), and a pod outside
/// the mesh probes the STRICT server in plaintext every 10 ms. Each marks its bytes
/// so that the fabric capture tells them apart.
struct Load {
    client: App,
    other: App,
    probe: App,
}

/// What each side of a `Load` reported.
struct Outcome {
    client: Value,
    other: Value,
    probe: Value,
}

impl Load {
    fn start(lab: &Lab, to: &str, count: u32) -> Load {
        let steady = |pod: &str, held: &str, text: &str| {
            let count = count.to_string();
            let args = [
                "steady",
                "--to",
                to,
                "--count",
                &count,
                "--every-ms",
                "10",
                "--held",
                held,
                "--text",
                text,
            ];
            lab.app(pod, &args).expect("load")
        };
        let load = Load {
            client: steady("client", "50", "MESHED-CLIENT-MARKER"),
            other: steady("other", "0", "MESHED-OTHER-MARKER"),
            probe: steady("outsider", "0", "PLAINTEXT-PROBE"),
        };
        // Under way: the held connections are open and new ones are being made.
        lab.wait_stats("a", "the load to be under way", |s| {
            s["workloads"]["shop/client"]["outbound_connected"]
                .as_u64()
                .is_some_and(|n| n > 50)
        })
        .expect("load under way");
        load
    }

    fn results(self) -> Outcome {
        let wait = |app: App| {
            app.json_result(Duration::from_secs(180))
                .expect("load result")
        };
        Outcome {
            client: wait(self.client),
            other: wait(self.other),
            probe: wait(self.probe),
        }
    }
}

impl Outcome {
    /// The probe never reached the STRICT server, in any phase.
    fn assert_probe_refused(&self, count: u64) {
        assert_eq!(
            self.probe["new_ok"], 0,
            "plaintext reached the STRICT pod: {}",
            self.probe
        );
        assert_eq!(self.probe["new_failed"], count, "{}", self.probe);
    }
}

/// Fails if a meshed pod's marker crossed the fabric in plaintext (the probe's
/// must be there: the capture works).
fn assert_no_plaintext(bytes: &[u8]) {
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

/// Wall-clock milliseconds, as lab-app reports them.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Every failure a load reported (`[began, ended]` in ms) overlaps a span during
/// which a node had no agent (`[stopped, the new one reported ready]`).
fn assert_failed_only_without_an_agent(r: &Value, no_agent: &[(u64, u64)]) {
    for key in ["new_failures_ms", "held_failures_ms"] {
        for f in r[key].as_array().into_iter().flatten() {
            let (began, ended) = (f[0].as_u64().unwrap_or(0), f[1].as_u64().unwrap_or(0));
            assert!(
                no_agent
                    .iter()
                    .any(|&(down, up)| began <= up && ended >= down),
                "{key}: a connection failed at [{began}, {ended}] ms while an agent ran \
                 (no agent during {no_agent:?}): {r}"
            );
        }
    }
}

#[test]
fn an_upgrade_under_steady_load_fails_nothing_and_leaks_no_plaintext() {
    let mut lab = two_node_lab_with(&["--drain-seconds", "60"]);
    lab.apply_config(common::STRICT).expect("STRICT applied");
    let _server = lab.server("server", &[8080]).expect("server");
    let to = lab.pod("server").addr4(8080).to_string();
    let capture = Capture::start(&lab);
    let load = Load::start(&lab, &to, 500);
    let mut old_a = lab.begin_upgrade("a").expect("agent a upgraded");
    let mut old_b = lab.begin_upgrade("b").expect("agent b upgraded");
    let out = load.results();
    for r in [&out.client, &out.other] {
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
        out.client["held_echoes"].as_u64().unwrap_or(0) >= 50,
        "{}",
        out.client
    );
    out.assert_probe_refused(500);
    for old in [&mut old_a, &mut old_b] {
        assert!(old
            .wait_exit(Duration::from_secs(60))
            .expect("exits")
            .success());
    }
    assert_no_plaintext(&capture.stop());
}

/// New connections per pod in a restart scenario (~17 s: longer than both restarts).
const RESTART_LOAD: u32 = 1500;

/// How a restart scenario stops a node's agent.
#[derive(Clone, Copy, Debug)]
enum Stop {
    Kill,
    Term,
}

/// Stops and restarts a's agent, then b's, under the load; returns the spans with
/// no agent on a node, and the load's outcome.
fn restart_both_under_load(lab: &mut Lab, to: &str, stop: Stop) -> (Vec<(u64, u64)>, Outcome) {
    let load = Load::start(lab, to, RESTART_LOAD);
    let mut no_agent = Vec::new();
    for node in ["a", "b"] {
        let down = now_ms();
        match stop {
            Stop::Kill => lab.kill_agent(node).expect("killed"),
            Stop::Term => assert!(lab.stop_agent(node).expect("stopped").success()),
        }
        lab.start_agent(node).expect("restarted");
        no_agent.push((down, now_ms()));
    }
    (no_agent, load.results())
}

/// The restart scenarios' assertions on what the load saw.
fn assert_restart_outcome(out: &Outcome, no_agent: &[(u64, u64)]) {
    for r in [&out.client, &out.other] {
        assert_failed_only_without_an_agent(r, no_agent);
        // Served again after the last restart, the load still running.
        let back = no_agent.last().map(|&(_, up)| up).unwrap_or(0);
        assert!(r["last_ok_ms"].as_u64() > Some(back), "{r}");
        eprintln!(
            "restart: {} of {RESTART_LOAD} new connections failed, longest outage {} ms, no agent during {:?} ms",
            r["new_failed"], r["longest_outage_ms"],
            no_agent.iter().map(|(d, u)| u - d).collect::<Vec<_>>()
        );
    }
    // Connections a's agent carried ended with it (a crash cannot keep them).
    assert_eq!(out.client["held_failed"], 50, "{}", out.client);
    out.assert_probe_refused(u64::from(RESTART_LOAD));
}

#[test]
fn a_kill_and_restart_under_steady_load_fails_only_while_no_agent_runs() {
    let mut lab = common::two_node_lab();
    lab.apply_config(common::STRICT).expect("STRICT applied");
    let _server = lab.server("server", &[8080]).expect("server");
    let to = lab.pod("server").addr4(8080).to_string();
    let capture = Capture::start(&lab);
    let (no_agent, out) = restart_both_under_load(&mut lab, &to, Stop::Kill);
    assert_restart_outcome(&out, &no_agent);
    assert_no_plaintext(&capture.stop());
}

#[test]
fn a_sigterm_and_restart_with_the_control_plane_down_fails_only_while_no_agent_runs() {
    let mut lab = Lab::new(common::two_node_spec(&[])).expect("lab");
    lab.use_control_plane();
    lab.start_agents().expect("agents");
    lab.apply_config(common::STRICT).expect("STRICT applied");
    let _server = lab.server("server", &[8080]).expect("server");
    let to = lab.pod("server").addr4(8080).to_string();
    let capture = Capture::start(&lab);
    lab.kill_control_plane().expect("control plane down");
    let (no_agent, out) = restart_both_under_load(&mut lab, &to, Stop::Term);
    assert_restart_outcome(&out, &no_agent);
    assert_no_plaintext(&capture.stop());
    // Both came back from what they had persisted: config and certificates.
    for node in ["a", "b"] {
        let log = lab.agent_log(node);
        assert!(
            log.contains("starting from the last good config from the control plane"),
            "{log}"
        );
        assert!(
            log.contains("certificate restored from the state directory"),
            "{log}"
        );
    }
}

#[test]
fn a_pod_that_cannot_be_enrolled_is_blocked_while_its_neighbours_are_served() {
    let mut lab = two_node_lab_with(&[]);
    let _server = lab.server("server", &[8080]).expect("server");
    let to = lab.pod("server").addr4(8080).to_string();
    // The outsider's application holds the agent's outbound port; its namespace
    // joins the mesh, so its enrolment fails and it is blocked.
    let squatter = lab.server("outsider", &[15001]).expect("app on 15001");
    lab.set_meshed("plain", true).expect("plain meshed");
    lab.wait_stats("a", "the outsider blocked", |s| {
        s["blocked"]["plain/outsider"].is_string()
    })
    .expect("blocked");
    let capture = Capture::start(&lab);
    // The blocked pod is the load's probe: every one of its connects is refused in
    // the kernel, none of its bytes leaves; its neighbours lose nothing.
    let out = Load::start(&lab, &to, 300).results();
    for r in [&out.client, &out.other] {
        assert_eq!(
            (
                r["new_ok"].as_u64(),
                r["new_failed"].as_u64(),
                r["held_failed"].as_u64()
            ),
            (Some(300), Some(0), Some(0)),
            "{r}"
        );
    }
    assert_eq!(out.probe["new_ok"], 0, "{}", out.probe);
    let bytes = capture.stop();
    let has = |m: &str| bytes.windows(m.len()).any(|w| w == m.as_bytes());
    assert!(
        bytes.len() > 64 * 1024,
        "the capture saw the neighbours' HBONE traffic (control)"
    );
    assert!(
        !has("PLAINTEXT-PROBE") && !has("MESHED-CLIENT-MARKER"),
        "a blocked or meshed pod's bytes crossed the fabric in plaintext"
    );
    assert!(lab
        .metrics("a")
        .unwrap()
        .contains("ferrymesh_workloads_blocked 1"));
    // Freed, the retry enrols it and it is served.
    drop(squatter);
    lab.wait_stats("a", "the outsider enrolled on retry", |s| {
        s["blocked"].as_object().is_some_and(|b| b.is_empty())
    })
    .expect("enrolled on retry");
    let r = lab
        .run_client("outsider", &["connect", "--to", &to, "--bytes", "1024"])
        .expect("served");
    common::assert_intact(&r, 1024);
}

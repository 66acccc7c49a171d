//! Config distribution in the lab: `mesh-agent control` serves the lab's config
//! directory (and the CA) to two node agents over gRPC.
mod common;

use std::time::Duration;

use common::assert_intact;
use ferrymesh_tests::{eventually, Lab, LabSpec, PodSpec, ServiceSpec};

/// a: client (shop), outsider (plain); b: server (shop) behind Service server.
fn spec() -> LabSpec {
    LabSpec {
        agent_args: vec![],
        local_ca: false,
        nodes: vec!["a".into(), "b".into()],
        namespaces: vec![("shop".into(), true), ("plain".into(), false)],
        pods: vec![
            PodSpec::new("client", "shop", "a"),
            PodSpec::new("outsider", "plain", "a"),
            PodSpec::new("server", "shop", "b"),
        ],
        services: vec![ServiceSpec {
            name: "server".into(),
            namespace: "shop".into(),
            app: "server".into(),
            port: 80,
            target_port: 8080,
        }],
    }
}

fn lab() -> Lab {
    let spec = spec();
    let mut lab = Lab::new(spec).expect("lab");
    lab.use_control_plane();
    lab.start_agents()
        .expect("agents ready with the control plane's first config");
    lab
}

fn enrolled(lab: &Lab, node: &str, workload: &str) -> bool {
    lab.stats(node)
        .map(|s| {
            s["enrolled"]
                .as_array()
                .is_some_and(|a| a.iter().any(|w| w == workload))
        })
        .unwrap_or(false)
}

fn wait_enrolled(lab: &Lab, node: &str, workload: &str, want: bool) {
    lab.wait_stats_for(
        node,
        &format!("{workload} enrolled = {want}"),
        Duration::from_secs(30),
        |s| {
            s["enrolled"]
                .as_array()
                .is_some_and(|a| a.iter().any(|w| w == workload) == want)
        },
    )
    .expect("enrolment follows the control plane");
}

#[test]
fn agents_take_their_config_from_the_control_plane() {
    let mut lab = lab();
    let _server = lab.server("server", &[8080]).expect("server");
    let to = format!("{}:80", lab.service("server").vip4);
    let connect = |lab: &Lab| {
        let r = lab
            .run_client("client", &["connect", "--to", &to, "--bytes", "65536"])
            .expect("client through the mesh");
        assert_intact(&r, 65536);
    };
    // First config came over the stream: pods enrolled, the VIP resolves, the CA
    // (same process) knows the workloads, mTLS works across nodes.
    assert!(enrolled(&lab, "a", "shop/client") && enrolled(&lab, "b", "shop/server"));
    connect(&lab);
    assert!(
        lab.counter("a", "shop/client", "outbound_hbone")
            .expect("counter")
            >= 1
    );

    // Node scope: b holds a's workloads without their netns.
    let (_, dump) = lab.admin("b", "/config_dump").expect("config dump");
    let client_netns = lab.pod("client").netns_path().display().to_string();
    assert!(dump.contains("client"), "{dump}");
    assert!(
        !dump.contains(&client_netns),
        "a's netns paths stay with a: {dump}"
    );

    // A change reaches every agent: the plain namespace joins the mesh.
    lab.set_meshed("plain", true).expect("config");
    wait_enrolled(&lab, "a", "plain/outsider", true);

    // A bad file in the directory is refused by the control plane; agents keep the
    // last good version.
    std::fs::write(
        lab.dir.join("broken.yaml"),
        "kind: Service\nmetadata: {name: x}\nspec: [not a map\n",
    )
    .expect("write");
    eventually(
        Duration::from_secs(10),
        "the control plane to refuse",
        || {
            let log = lab.ca_log();
            if log.contains("config refused") {
                Ok(())
            } else {
                Err(log)
            }
        },
    )
    .expect("refused");
    assert!(
        lab.ca_log().contains("broken.yaml"),
        "the error names the file: {}",
        lab.ca_log()
    );
    connect(&lab);
    std::fs::remove_file(lab.dir.join("broken.yaml")).expect("remove");

    // The control plane goes away: agents keep their config and keep serving; a
    // change made meanwhile arrives once it is back (the agents reconnect).
    lab.kill_control_plane().expect("kill control plane");
    connect(&lab);
    lab.set_meshed("plain", false).expect("config");
    // The agent tried to reach the control plane again after the change, and
    // failed: it still has the config it had.
    let failures = || lab.agent_log("a").matches("config stream:").count();
    let before = failures();
    eventually(
        Duration::from_secs(30),
        "a failed reconnect of agent a",
        || {
            if failures() >= before + 2 {
                Ok(())
            } else {
                Err(failures())
            }
        },
    )
    .expect("reconnect attempts");
    assert!(
        enrolled(&lab, "a", "plain/outsider"),
        "no control plane, no change"
    );
    lab.start_control_plane().expect("control plane back");
    wait_enrolled(&lab, "a", "plain/outsider", false);
    connect(&lab);
    let log = lab.agent_log("a");
    assert!(
        log.contains("config stream"),
        "the agent said it lost the stream: {log}"
    );

    // meshctl reads the control plane's admin API (in the fabric namespace here).
    let meshctl = |args: &[&str]| lab.meshctl(lab.fabric_netns(), args).expect("meshctl");
    // Both agents reconnect (each on its own backoff) and ack what they were sent;
    // a version that changes nothing for a node is not sent to it.
    let settled = |st: &serde_json::Value| {
        ["a", "b"].iter().all(|n| {
            let x = &st["nodes"][n];
            x["connected"] == true
                && x["sent_version"].as_u64() >= Some(1)
                && x["acked_version"] == x["sent_version"]
        })
    };
    eventually(
        Duration::from_secs(30),
        "every agent to connect and ack what it was sent",
        || {
            let status: serde_json::Value =
                serde_json::from_str(&meshctl(&["status", "-o", "json"])).expect("json");
            if settled(&status) {
                Ok(())
            } else {
                Err(status)
            }
        },
    )
    .expect("settled");
    let table = meshctl(&["status"]);
    assert!(
        table.contains("NODE")
            && table
                .lines()
                .any(|l| l.starts_with("a ") && l.contains("yes")),
        "{table}"
    );
    let check = meshctl(&["check", "shop/client"]);
    assert!(
        check.contains("captured")
            && check.contains("yes")
            && check.contains("spiffe://cluster.local/ns/shop/sa/client"),
        "{check}"
    );
    let outsider: serde_json::Value =
        serde_json::from_str(&meshctl(&["check", "plain/outsider", "-o", "json"])).expect("json");
    assert_eq!(outsider["captured"], false, "{outsider}");
    let dump = meshctl(&["config-dump", "b"]);
    assert!(
        dump.contains("kind: Workload") && !dump.contains(&client_netns),
        "{dump}"
    );
    // Nothing is refused or fail-closed in this config.
    let problems = meshctl(&["problems"]);
    assert!(problems.contains("no problems"), "{problems}");
}

#[test]
fn cluster_mode_agents_find_pod_namespaces_themselves() {
    // As with Kubernetes: the config has no netns; each agent finds its pods among
    // its node's pinned namespaces by their addresses.
    let spec = spec();
    let mut lab = Lab::new(spec).expect("lab");
    lab.use_control_plane();
    lab.use_cluster_mode().expect("cluster mode");
    assert!(!std::fs::read_to_string(lab.config_path())
        .expect("config")
        .contains("netns:"));
    lab.start_agents().expect("agents");
    wait_enrolled(&lab, "a", "shop/client", true);
    wait_enrolled(&lab, "b", "shop/server", true);
    let _server = lab.server("server", &[8080]).expect("server");
    let to = format!("{}:80", lab.service("server").vip4);
    let r = lab
        .run_client("client", &["connect", "--to", &to, "--bytes", "65536"])
        .expect("client");
    assert_intact(&r, 65536);
    assert!(
        lab.counter("a", "shop/client", "outbound_hbone")
            .expect("counter")
            >= 1
    );
    // Labelling a namespace enrols its pods live; removing the label unenrols them.
    lab.set_meshed("plain", true).expect("config");
    wait_enrolled(&lab, "a", "plain/outsider", true);
    lab.set_meshed("plain", false).expect("config");
    wait_enrolled(&lab, "a", "plain/outsider", false);
}

#[test]
fn a_restart_with_the_control_plane_down_starts_from_the_last_good_config() {
    let mut lab = lab();
    let mut server = lab.server("server", &[8080]).expect("server");
    let to = lab.pod("server").addr4(8080).to_string();
    let echoed = |lab: &Lab, pod: &str| {
        lab.run_client(pod, &["connect", "--to", &to, "--bytes", "1024"])
            .is_ok_and(|r| r["received"] == 1024)
    };
    let plaintext_echoed = |lab: &Lab| echoed(lab, "outsider");
    assert!(echoed(&lab, "client"));
    server
        .expect_line("accepted", Duration::from_secs(5))
        .expect("the first connection accepted");
    // `drain` returns every line so far: count the accepts.
    let accepted = |server: &mut ferrymesh_tests::App| {
        let lines = server.drain();
        lines.iter().filter(|l| l.starts_with("accepted")).count()
    };
    let before = accepted(&mut server);
    // SIGTERM: the server stays captured; nothing reaches it around the mesh.
    assert!(lab.stop_agent("b").unwrap().success());
    assert!(
        !plaintext_echoed(&lab),
        "plaintext reached a pod whose agent stopped"
    );
    assert_eq!(
        accepted(&mut server),
        before,
        "the server accepted a connection while no agent ran"
    );
    // With the control plane down, the new agent enrols from what it persisted.
    lab.kill_control_plane().expect("kill control plane");
    lab.start_agent("b")
        .expect("agent b ready without a control plane");
    assert!(
        enrolled(&lab, "b", "shop/server"),
        "enrolled from the persisted config"
    );
    assert!(lab
        .agent_log("b")
        .contains("starting from the last good config from the control plane"));
    assert!(
        plaintext_echoed(&lab),
        "served again (PERMISSIVE) by the new agent"
    );
    // mTLS at once too, with the certificate b kept (the CA is down with the
    // control plane).
    assert!(lab
        .agent_log("b")
        .contains("certificate restored from the state directory"));
    assert!(echoed(&lab, "client"), "mTLS with the restored certificate");
    // The control plane back: b renews from the CA.
    let issued = lab.stats("b").unwrap()["certificate_counters"]["issued"]
        .as_u64()
        .unwrap_or(0);
    lab.start_control_plane().expect("control plane back");
    lab.wait_stats_for(
        "b",
        "a certificate from the CA again",
        Duration::from_secs(60),
        |s| s["certificate_counters"]["issued"].as_u64() > Some(issued),
    )
    .expect("renewed from the CA");
    assert!(echoed(&lab, "client"), "served over mTLS");
}

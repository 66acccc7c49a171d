//! Transparent capture end to end: real eBPF, real sockets, two agents.
mod common;

use std::time::Duration;

use common::{assert_intact, two_node_lab, two_node_lab_with, MIB};

#[test]
fn cross_node_and_same_node_traffic_passes_both_agents_intact() {
    let lab = two_node_lab();
    let mut server = lab.server("server", &[8080]).expect("server");
    let mut local = lab.server("local-server", &[8080]).expect("local server");

    let to = lab.pod("server").addr4(8080).to_string();
    let r = lab
        .run_client(
            "client",
            &["connect", "--to", &to, "--bytes", &(16 * MIB).to_string()],
        )
        .expect("cross-node client");
    assert_intact(&r, 16 * MIB);
    // Delivered by agent b from 127.0.0.6: the connection went through it.
    let seen = server
        .expect_line("accepted", Duration::from_secs(5))
        .expect("accepted");
    assert!(seen.starts_with("accepted 127.0.0.6:"), "{seen}");
    assert!(
        lab.counter("a", "shop/client", "outbound_connected")
            .unwrap()
            >= 1
    );
    assert!(
        lab.counter("b", "shop/server", "inbound_delivered")
            .unwrap()
            >= 1
    );

    let to = lab.pod("local-server").addr4(8080).to_string();
    let r = lab
        .run_client(
            "client",
            &["connect", "--to", &to, "--bytes", &(16 * MIB).to_string()],
        )
        .expect("same-node client");
    assert_intact(&r, 16 * MIB);
    let seen = local
        .expect_line("accepted", Duration::from_secs(5))
        .expect("accepted");
    assert!(seen.starts_with("accepted 127.0.0.6:"), "{seen}");
    assert!(
        lab.counter("a", "shop/local-server", "inbound_delivered")
            .unwrap()
            >= 1
    );
    assert!(
        lab.counter("a", "shop/client", "outbound_connected")
            .unwrap()
            >= 2
    );
}

#[test]
fn service_vip_reaches_an_endpoint_and_ipv6_works_as_ipv4_does() {
    let lab = two_node_lab();
    let mut server = lab.server("server", &[8080]).expect("server");
    let svc = lab.service("server");

    for to in [
        std::net::SocketAddr::new(svc.vip4, 80),
        std::net::SocketAddr::new(svc.vip6, 80),
        lab.pod("server").addr6(8080),
    ] {
        let r = lab
            .run_client(
                "client",
                &[
                    "connect",
                    "--to",
                    &to.to_string(),
                    "--bytes",
                    &MIB.to_string(),
                ],
            )
            .unwrap_or_else(|e| panic!("client to {to}: {e}"));
        assert_intact(&r, MIB);
        // Captured on the client end: without a getpeername hook the application's
        // socket is connected to the agent's outbound listener on loopback.
        let want_peer = if to.is_ipv4() {
            "127.0.0.1:15001"
        } else {
            "[::1]:15001"
        };
        assert_eq!(r["peer"].as_str(), Some(want_peer), "{r}");
        let seen = server
            .expect_line("accepted", Duration::from_secs(5))
            .expect("accepted");
        let want_local = if to.is_ipv4() {
            lab.pod("server").addr4(8080).to_string()
        } else {
            lab.pod("server").addr6(8080).to_string()
        };
        assert!(
            seen.ends_with(&want_local),
            "{to}: server saw {seen}, want local {want_local}"
        );
    }
    assert!(
        lab.counter("b", "shop/server", "inbound_delivered")
            .unwrap()
            >= 3
    );
    assert!(
        lab.counter("a", "shop/client", "outbound_connected")
            .unwrap()
            >= 3
    );
}

#[test]
fn a_namespace_outside_the_mesh_is_not_captured_and_toggles_live() {
    let mut lab = two_node_lab();
    let _server = lab.server("server", &[8080]).expect("server");
    let to = lab.pod("server").addr4(8080).to_string();
    let captured = |lab: &ferrymesh_tests::Lab| {
        lab.counter("a", "plain/outsider", "outbound_captured")
            .unwrap()
    };

    // Not in the mesh: nothing on agent a sees the outsider's connection.
    let mut open = lab.app("outsider", &["hold", "--to", &to]).expect("hold");
    open.expect_line("connected", Duration::from_secs(10))
        .expect("connected");
    open.send_line("before").unwrap();
    open.expect_line("echo before", Duration::from_secs(5))
        .unwrap();
    assert_eq!(captured(&lab), 0);

    // Enrol live: new connections are captured, the open one is left alone.
    lab.set_meshed("plain", true).unwrap();
    lab.wait_stats("a", "a certificate for the newly enrolled identity", |s| {
        s["certificates"]
            .to_string()
            .contains("ns/plain/sa/outsider")
    })
    .unwrap();
    lab.wait_stats("a", "plain/outsider enrolled", |s| {
        s["enrolled"]
            .as_array()
            .is_some_and(|a| a.iter().any(|w| w == "plain/outsider"))
    })
    .unwrap();
    open.send_line("during").unwrap();
    open.expect_line("echo during", Duration::from_secs(5))
        .unwrap();
    let r = lab
        .run_client("outsider", &["connect", "--to", &to, "--bytes", "4096"])
        .unwrap();
    assert_intact(&r, 4096);
    assert_eq!(
        captured(&lab),
        1,
        "the new connection is captured, the old one is not"
    );

    // A connection made while enrolled survives unenrolment.
    let mut meshed = lab.app("outsider", &["hold", "--to", &to]).expect("hold");
    meshed
        .expect_line("connected", Duration::from_secs(10))
        .unwrap();
    // (The kernel completes the connect before the agent has accepted it.)
    lab.wait_stats("a", "the held connection captured", |s| {
        s["workloads"]["plain/outsider"]["outbound_captured"] == 2
    })
    .unwrap();
    lab.set_meshed("plain", false).unwrap();
    lab.wait_stats("a", "plain/outsider unenrolled", |s| {
        s["enrolled"]
            .as_array()
            .is_some_and(|a| !a.iter().any(|w| w == "plain/outsider"))
    })
    .unwrap();
    meshed.send_line("after").unwrap();
    meshed
        .expect_line("echo after", Duration::from_secs(5))
        .unwrap();
    open.send_line("still").unwrap();
    open.expect_line("echo still", Duration::from_secs(5))
        .unwrap();
    let r = lab
        .run_client("outsider", &["connect", "--to", &to, "--bytes", "4096"])
        .unwrap();
    assert_intact(&r, 4096);
    assert_eq!(
        captured(&lab),
        2,
        "after unenrolment new connections are not captured"
    );
    // Its identity's certificate went with its last pod on the node.
    let certs = lab.stats("a").unwrap()["certificates"].to_string();
    assert!(!certs.contains("ns/plain/sa/outsider"), "{certs}");
    assert!(certs.contains("ns/shop/sa/client"), "{certs}");
}

#[test]
fn no_loops_delivery_is_not_recaptured_and_agent_sockets_pass() {
    let lab = two_node_lab();
    let _server = lab.server("server", &[8080]).expect("server");
    let _local = lab.server("local-server", &[8080]).expect("local server");
    for to in [
        lab.pod("server").addr4(8080),
        lab.pod("local-server").addr4(8080),
        lab.pod("local-server").addr6(8080),
    ] {
        let r = lab
            .run_client(
                "client",
                &["connect", "--to", &to.to_string(), "--bytes", "65536"],
            )
            .unwrap();
        assert_intact(&r, 65536);
    }
    let a = lab.stats("a").unwrap();
    let b = lab.stats("b").unwrap();
    // Exactly one capture per connection on each end: no connection came round again.
    assert_eq!(
        a["workloads"]["shop/client"]["outbound_captured"], 3,
        "{a:#}"
    );
    assert_eq!(
        b["workloads"]["shop/server"]["inbound_captured"], 1,
        "{b:#}"
    );
    assert_eq!(
        a["workloads"]["shop/local-server"]["inbound_captured"], 2,
        "{a:#}"
    );
    // The agent runs inside the node's cgroup: its own connects met connect4 and
    // passed because of the mark; its deliveries met sk_lookup and passed.
    assert!(
        a["ebpf"]["connect_skipped_mark"].as_u64().unwrap() >= 3,
        "{a:#}"
    );
    assert!(
        a["ebpf"]["lookup_skipped_delivery"].as_u64().unwrap() >= 2,
        "{a:#}"
    );
    assert!(
        b["ebpf"]["lookup_skipped_delivery"].as_u64().unwrap() >= 1,
        "{b:#}"
    );
    // The same kernel counters are Prometheus series; only pods' connects are
    // captured and none happens meanwhile, so both views agree.
    let metrics = lab.metrics("a").unwrap();
    let captured = format!(
        "ferrymesh_ebpf_events_total{{event=\"connect_captured\"}} {}\n",
        a["ebpf"]["connect_captured"]
    );
    assert!(metrics.contains(&captured), "{captured} in\n{metrics}");
}

#[test]
fn two_thousand_short_connections_leave_the_orig_dst_map_as_it_was() {
    let lab = two_node_lab();
    let _local = lab.server("local-server", &[8080]).expect("local server");
    let before = lab.stats("a").unwrap()["orig_dst_entries"]
        .as_u64()
        .unwrap();
    let to = lab.pod("local-server").addr4(8080).to_string();
    let r = lab
        .run_client("client", &["churn", "--to", &to, "--count", "2000"])
        .unwrap();
    assert_eq!(r["ok"], 2000, "{r}");
    let s = lab
        .wait_stats("a", "orig_dst entries back to the start", |s| {
            s["orig_dst_entries"].as_u64() == Some(before)
        })
        .unwrap();
    assert!(
        s["ebpf"]["orig_dst_recorded"].as_u64().unwrap() >= 2000,
        "{s:#}"
    );
    assert!(
        s["ebpf"]["orig_dst_deleted"].as_u64().unwrap() >= 2000,
        "{s:#}"
    );
}

#[test]
fn a_malformed_config_is_refused_with_its_place_and_traffic_keeps_flowing() {
    let lab = two_node_lab();
    let _server = lab.server("server", &[8080]).expect("server");
    let good = lab.render_config();
    let bad = good.replacen(&lab.pod("client").ip4.to_string(), "198.19.1.300", 1);
    lab.write_raw_config(&bad).unwrap();
    let s = lab
        .wait_stats("a", "the bad config to be refused", |s| {
            s["config"]["errors"].as_u64() >= Some(1)
        })
        .unwrap();
    let err = s["config"]["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        err.contains("mesh.yaml:") && err.contains("spec.addresses[0]"),
        "{err}"
    );
    assert!(lab
        .agent_log("a")
        .contains("last good config stays in force"));
    // The last good config is still in force: the client is still enrolled and served.
    assert!(
        s["enrolled"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w == "shop/client"),
        "{s:#}"
    );
    let to = lab.pod("server").addr4(8080).to_string();
    let r = lab
        .run_client("client", &["connect", "--to", &to, "--bytes", "65536"])
        .unwrap();
    assert_intact(&r, 65536);
    assert_eq!(
        lab.counter("a", "shop/client", "outbound_connected")
            .unwrap(),
        1
    );
}

#[test]
fn sigterm_leaves_pods_captured_until_uninstall() {
    let mut lab = two_node_lab();
    let mut server = lab.server("server", &[8080]).expect("server");
    let to = lab.pod("server").addr4(8080).to_string();
    let echoed = |lab: &ferrymesh_tests::Lab, pod: &str| {
        lab.run_client(pod, &["connect", "--to", &to, "--bytes", "4096"])
            .is_ok_and(|r| r["received"] == 4096)
    };
    assert!(lab.stop_agent("a").unwrap().success());
    assert!(lab.stop_agent("b").unwrap().success());
    // Stopped agents leave capture in place: the meshed client is refused, and
    // plaintext from outside the mesh never reaches the meshed server.
    assert!(!echoed(&lab, "client"), "a meshed pod went around the mesh");
    assert!(!echoed(&lab, "outsider"), "plaintext reached a meshed pod");
    assert!(
        server.drain().iter().all(|l| !l.starts_with("accepted")),
        "the server accepted a connection while no agent ran"
    );
    // `mesh-agent uninstall` removes capture: the client reaches the server
    // directly, which sees the client's own address, not the agent's 127.0.0.6.
    assert!(lab.uninstall("a").unwrap().success());
    assert!(lab.uninstall("b").unwrap().success());
    let r = lab
        .run_client("client", &["connect", "--to", &to, "--bytes", "4096"])
        .unwrap();
    assert_intact(&r, 4096);
    let seen = server
        .expect_line("accepted", Duration::from_secs(5))
        .unwrap();
    assert!(
        seen.starts_with(&format!("accepted {}:", lab.pod("client").ip4)),
        "{seen}"
    );
}

#[test]
fn excluded_ports_and_the_pod_itself_pass_untouched() {
    let lab = two_node_lab_with(&["--exclude-port", "9999"]);
    let _server = lab.server("server", &[8080, 9999]).expect("server");
    let _own = lab
        .server("client", &[7000])
        .expect("server inside the client pod");

    // An excluded port: the client's socket is connected to the server itself.
    let to = lab.pod("server").addr4(9999);
    let r = lab
        .run_client(
            "client",
            &["connect", "--to", &to.to_string(), "--bytes", "4096"],
        )
        .unwrap();
    assert_intact(&r, 4096);
    assert_eq!(r["peer"].as_str(), Some(to.to_string().as_str()), "{r}");

    // The pod talking to its own addresses, v4 and v6: neither end is captured.
    for to in [lab.pod("client").addr4(7000), lab.pod("client").addr6(7000)] {
        let r = lab
            .run_client(
                "client",
                &["connect", "--to", &to.to_string(), "--bytes", "4096"],
            )
            .unwrap();
        assert_intact(&r, 4096);
        assert_eq!(r["peer"].as_str(), Some(to.to_string().as_str()), "{r}");
    }
    let a = lab.stats("a").unwrap();
    assert_eq!(
        a["workloads"]["shop/client"]["outbound_captured"]
            .as_u64()
            .unwrap_or(0),
        0,
        "{a:#}"
    );
    assert_eq!(
        a["workloads"]["shop/client"]["inbound_captured"]
            .as_u64()
            .unwrap_or(0),
        0,
        "{a:#}"
    );
    assert!(
        a["ebpf"]["connect_skipped_excluded"].as_u64().unwrap() >= 3,
        "{a:#}"
    );

    // A port that is not excluded is still captured.
    let to = lab.pod("server").addr4(8080);
    let r = lab
        .run_client(
            "client",
            &["connect", "--to", &to.to_string(), "--bytes", "4096"],
        )
        .unwrap();
    assert_eq!(r["peer"].as_str(), Some("127.0.0.1:15001"), "{r}");
}

#[test]
fn a_dead_agent_fails_closed_and_a_new_one_takes_over() {
    let mut lab = two_node_lab();
    let mut server = lab.server("server", &[8080]).expect("server");
    let to = lab.pod("server").addr4(8080).to_string();
    let echoed = |lab: &ferrymesh_tests::Lab, pod: &str| {
        lab.run_client(pod, &["connect", "--to", &to, "--bytes", "1024"])
            .is_ok_and(|r| r["received"] == 1024)
    };
    assert!(echoed(&lab, "client"));
    server
        .expect_line("accepted", Duration::from_secs(5))
        .unwrap();

    // The client's agent dies: its connections are refused, not sent in plaintext.
    lab.kill_agent("a").unwrap();
    assert!(
        !echoed(&lab, "client"),
        "a meshed pod reached the server without its agent"
    );
    // The server's agent dies: plaintext from outside the mesh is refused at the
    // server's netns instead of reaching the application directly.
    lab.kill_agent("b").unwrap();
    assert!(
        !echoed(&lab, "outsider"),
        "plaintext reached a meshed pod without its agent"
    );
    let seen = server.drain();
    assert_eq!(
        seen.iter().filter(|l| l.starts_with("accepted")).count(),
        1,
        "{seen:?}"
    );

    // New agents remove what the dead ones pinned and serve again.
    lab.start_agent("b").unwrap();
    lab.start_agent("a").unwrap();
    assert!(echoed(&lab, "client"));
    assert!(echoed(&lab, "outsider"));
}

#[test]
fn a_pod_that_cannot_be_enrolled_is_blocked_and_retried() {
    let mut lab = two_node_lab();
    let _server = lab.server("server", &[8080]).expect("server");
    let to = lab.pod("server").addr4(8080).to_string();
    let echoed = |lab: &ferrymesh_tests::Lab, pod: &str| {
        lab.run_client(pod, &["connect", "--to", &to, "--bytes", "1024"])
            .is_ok_and(|r| r["received"] == 1024)
    };
    // The outsider's application holds the agent's outbound port: when its
    // namespace joins the mesh, enrolment fails.
    let squatter = lab.server("outsider", &[15001]).expect("app on 15001");
    assert!(
        echoed(&lab, "outsider"),
        "outside the mesh it is not captured"
    );
    let blocked_before = lab.stats("a").unwrap()["ebpf"]["connect_blocked"]
        .as_u64()
        .unwrap_or(0);
    lab.set_meshed("plain", true).unwrap();
    lab.wait_stats("a", "the outsider blocked", |s| {
        s["blocked"]["plain/outsider"]
            .as_str()
            .is_some_and(|why| why.contains("Address already in use"))
    })
    .unwrap();
    // Blocked, not passed: its connects are refused in the kernel.
    assert!(
        !echoed(&lab, "outsider"),
        "a pod that failed enrolment went around the mesh"
    );
    let s = lab.stats("a").unwrap();
    assert!(
        s["ebpf"]["connect_blocked"].as_u64().unwrap_or(0) > blocked_before,
        "{s:#}"
    );
    let m = lab.metrics("a").unwrap();
    assert!(m.contains("ferrymesh_workloads_blocked 1"), "{m}");
    assert!(lab
        .agent_log("a")
        .contains("enrolment failed, the pod is blocked and retried"));
    // The port is free again: the retry enrols it and it is served.
    drop(squatter);
    lab.wait_stats("a", "the outsider enrolled on retry", |s| {
        s["enrolled"]
            .as_array()
            .is_some_and(|a| a.iter().any(|w| w == "plain/outsider"))
            && s["blocked"].as_object().is_some_and(|b| b.is_empty())
    })
    .unwrap();
    assert!(echoed(&lab, "outsider"));
}

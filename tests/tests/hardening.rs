//! Hostile traffic is refused with a reason and a metric, and never harms a
//! well-behaved client on another pod (issue 11).
mod common;

use std::time::Duration;

use common::{assert_intact, two_node_lab};
use ferrymesh_tests::{eventually, Lab};

/// Open descriptors of a node's agent.
fn agent_fds(lab: &Lab, node: &str) -> usize {
    let pid = lab.agent_pid(node).expect("agent running");
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The value of `ferrymesh_hostile_refused_total{reason}` on a node's agent.
fn refused(lab: &Lab, node: &str, reason: &str) -> u64 {
    let want = format!("ferrymesh_hostile_refused_total{{reason=\"{reason}\"}} ");
    lab.metrics(node)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(&want).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}

/// A client that must be refused: its connect fails or it gets no echo.
fn assert_refused(lab: &Lab, pod: &str, to: std::net::SocketAddr) {
    let r = lab.run_client(
        pod,
        &["connect", "--to", &to.to_string(), "--bytes", "1024"],
    );
    if let Ok(r) = r {
        assert_ne!(r["received"].as_u64(), Some(1024), "{to} was served: {r}");
    }
}

fn assert_served(lab: &Lab, pod: &str, to: std::net::SocketAddr) {
    let r = lab
        .run_client(
            pod,
            &["connect", "--to", &to.to_string(), "--bytes", "65536"],
        )
        .expect("well-behaved client");
    assert_intact(&r, 65536);
}

/// An agent's resident memory stays near its level (8 MiB of slack for the
/// allocator's caches).
fn assert_rss_near(lab: &Lab, node: &str, before_kib: u64) {
    eventually(
        Duration::from_secs(10),
        "agent memory near its level",
        || {
            let now = lab.agent_rss_kib(node).unwrap_or(u64::MAX);
            if now <= before_kib + 8 * 1024 {
                Ok(())
            } else {
                Err(format!("{now} KiB, {before_kib} KiB before"))
            }
        },
    )
    .unwrap();
}

/// Once any burst is over, an agent's descriptors return to about where they were.
fn assert_fds_settle(lab: &Lab, node: &str, before: usize) {
    eventually(
        Duration::from_secs(10),
        "agent descriptors back to their level",
        || {
            let now = agent_fds(lab, node);
            if now <= before + 8 {
                Ok(())
            } else {
                Err(format!("{now} open, {before} before"))
            }
        },
    )
    .unwrap();
}

#[test]
fn the_agents_own_ports_in_a_pod_are_refused_not_looped() {
    let lab = two_node_lab();
    let _server = lab.server("server", &[8080]).expect("server");
    let _local = lab.server("local-server", &[8080]).expect("local server");
    let server = lab.pod("server").clone();
    let local = lab.pod("local-server").clone();
    let (fds_a, fds_b) = (agent_fds(&lab, "a"), agent_fds(&lab, "b"));
    let rss_b = lab.agent_rss_kib("b").expect("rss");

    // Plaintext from outside the mesh, to the inbound and outbound ports and to
    // the node ports the agent never binds in a pod.
    for port in [15006, 15001, 15020] {
        assert_refused(&lab, "outsider", server.addr4(port));
    }
    // Over HBONE from a mesh pod (CONNECT to the agent's ports), and same-node.
    for port in [15006, 15008] {
        assert_refused(&lab, "client", server.addr4(port));
    }
    assert_refused(&lab, "client", local.addr4(15006));

    assert!(
        refused(&lab, "b", "agent_port") >= 5,
        "{}",
        lab.metrics("b").unwrap()
    );
    assert!(
        refused(&lab, "a", "agent_port") >= 1,
        "{}",
        lab.metrics("a").unwrap()
    );
    assert!(
        lab.agent_log("b").contains("one of the agent's own"),
        "{}",
        lab.agent_log("b")
    );
    // No loop: descriptors did not run away, and other pods are served.
    assert_fds_settle(&lab, "a", fds_a);
    assert_fds_settle(&lab, "b", fds_b);
    assert_rss_near(&lab, "b", rss_b);
    assert_served(&lab, "client", server.addr4(8080));
    assert_served(&lab, "client", local.addr4(8080));
}

#[test]
fn inbound_capture_drops_what_it_cannot_attribute() {
    let lab = two_node_lab();
    // An app on a node port the agent never binds in a pod, and on a secondary
    // address of the pod: both used to be reached around the mesh.
    let _local = lab
        .server("local-server", &[8080, 15021])
        .expect("local server");
    let local = lab.pod("local-server").clone();
    let secondary4 = {
        let mut o = match local.addr4(0).ip() {
            std::net::IpAddr::V4(v4) => v4.octets(),
            v6 => panic!("not IPv4: {v6}"),
        };
        o[3] = 200;
        std::net::Ipv4Addr::from(o)
    };
    lab.exec_in(
        "local-server",
        &[
            "ip",
            "addr",
            "add",
            &format!("{secondary4}/24"),
            "dev",
            "eth0",
        ],
    )
    .expect("secondary address");
    let dropped_before = lab.stats("a").unwrap()["ebpf"]["lookup_dropped_unattributed"]
        .as_u64()
        .unwrap_or(0);

    assert_refused(&lab, "outsider", local.addr4(15021));
    assert_refused(
        &lab,
        "outsider",
        std::net::SocketAddr::new(secondary4.into(), 8080),
    );

    let a = lab.stats("a").unwrap();
    assert!(
        a["ebpf"]["lookup_dropped_unattributed"].as_u64().unwrap() > dropped_before,
        "{a:#}"
    );
    assert!(refused(&lab, "a", "agent_port") >= 1);
    // The pod's own address is still captured and served.
    assert_served(&lab, "client", local.addr4(8080));
    assert_served(&lab, "outsider", local.addr4(8080));
}

#[test]
fn one_pod_cannot_hold_the_metrics_port() {
    let lab = two_node_lab();
    let node_a: std::net::SocketAddr = {
        let mut o = match lab.pod("outsider").addr4(0).ip() {
            std::net::IpAddr::V4(v4) => v4.octets(),
            v6 => panic!("not IPv4: {v6}"),
        };
        o[3] = 1;
        (std::net::Ipv4Addr::from(o), 15020).into()
    };
    let mut holder = lab
        .app(
            "outsider",
            &["hold-many", "--to", &node_a.to_string(), "--conns", "20"],
        )
        .expect("holder");
    holder
        .expect_line("open", Duration::from_secs(10))
        .expect("open");
    // Eight are kept (the per-peer cap), the rest closed at accept and counted.
    eventually(Duration::from_secs(10), "admin refusals counted", || {
        let n = refused(&lab, "a", "admin_connection_limit");
        if n >= 12 {
            Ok(())
        } else {
            Err(format!("{n} refused"))
        }
    })
    .unwrap();
    // Meanwhile the node's own scraper (another peer) is served.
    assert!(lab
        .metrics("a")
        .unwrap()
        .contains("ferrymesh_hostile_refused_total"));
    assert!(
        lab.agent_log("a").contains("admin connection refused"),
        "{}",
        lab.agent_log("a")
    );
}

#[test]
fn a_peer_over_its_connection_cap_is_refused_and_others_are_served() {
    let lab = common::two_node_lab_with(&["--max-connections-per-peer", "40"]);
    let _local = lab.server("local-server", &[8080]).expect("local server");
    let _server = lab.server("server", &[8080]).expect("server");
    let local = lab.pod("local-server").clone();
    // 60 plaintext connections from one pod outside the mesh to one pod: 40 are
    // taken, 20 reset at accept.
    let mut holder = lab
        .app(
            "outsider",
            &[
                "hold-many",
                "--to",
                &local.addr4(8080).to_string(),
                "--conns",
                "60",
            ],
        )
        .expect("holder");
    holder
        .expect_line("open", Duration::from_secs(10))
        .expect("open");
    eventually(Duration::from_secs(10), "per-peer refusals counted", || {
        let n = refused(&lab, "a", "peer_connection_limit");
        if n >= 20 {
            Ok(())
        } else {
            Err(format!("{n} refused"))
        }
    })
    .unwrap();
    assert!(lab
        .agent_log("a")
        .contains("inbound connection refused: peer_connection_limit"));
    // Another pod is served meanwhile, cross-node (HBONE) and same-node.
    assert_served(&lab, "client", local.addr4(8080));
    assert_served(&lab, "client", lab.pod("server").addr4(8080));
}

#[test]
fn hbone_clients_that_never_handshake_are_dropped_after_the_timeout() {
    let lab = two_node_lab();
    let _server = lab.server("server", &[8080]).expect("server");
    let server = lab.pod("server").clone();
    let fds_b = agent_fds(&lab, "b");
    let rss_b = lab.agent_rss_kib("b").expect("rss");
    // Thirty TCP connections to the HBONE port that never start TLS.
    let mut holder = lab
        .app(
            "outsider",
            &[
                "hold-many",
                "--to",
                &server.addr4(15008).to_string(),
                "--conns",
                "30",
            ],
        )
        .expect("holder");
    holder
        .expect_line("open", Duration::from_secs(10))
        .expect("open");
    // Served meanwhile.
    assert_served(&lab, "client", server.addr4(8080));
    // The agent gives up on them after its handshake timeout (10 s) and frees them.
    eventually(
        Duration::from_secs(30),
        "handshake timeouts counted",
        || {
            let n = refused(&lab, "b", "handshake_timeout");
            if n >= 30 {
                Ok(())
            } else {
                Err(format!("{n} timed out"))
            }
        },
    )
    .unwrap();
    assert_fds_settle(&lab, "b", fds_b);
    assert_rss_near(&lab, "b", rss_b);
}

#[test]
fn a_jwks_file_path_in_an_object_is_never_read() {
    let mut lab = two_node_lab();
    let _server = lab.server("server", &[8080]).expect("server");
    let rss_a = lab.agent_rss_kib("a").expect("rss");
    // A tenant's RequestAuthentication pointing every agent at /dev/zero.
    lab.set_extra_config(
        "---\napiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: zero, namespace: shop}\nspec:\n  selector: {matchLabels: {app: no-such-app}}\n  jwtRules:\n  - issuer: https://evil\n    jwksFile: /dev/zero\n",
    )
    .unwrap();
    // Refused alone: the rule refuses every token (fail closed), the rest of the
    // config applies, and the file is never opened.
    lab.wait_stats("a", "the rule to be enforced fail-closed", |s| {
        s["config"]["policy_parts_fail_closed"].as_u64() >= Some(1)
    })
    .unwrap();
    let log = lab.agent_log("a");
    assert!(
        log.contains("policy not fully understood")
            && log.contains("jwksFile is not accepted here"),
        "{log}"
    );
    // Not read: memory stays, and traffic keeps flowing.
    assert_rss_near(&lab, "a", rss_a);
    assert_served(&lab, "client", lab.pod("server").addr4(8080));
}

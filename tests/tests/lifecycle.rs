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

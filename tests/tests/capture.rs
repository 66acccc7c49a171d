//! Transparent capture end to end: real eBPF, real sockets, two agents.
mod common;

use std::time::Duration;

use common::{assert_intact, two_node_lab, MIB};

#[test]
fn cross_node_and_same_node_traffic_passes_both_agents_intact() {
    let lab = two_node_lab();
    let mut server = lab.server("server", &[8080]).expect("server");
    let mut local = lab.server("local-server", &[8080]).expect("local server");

    let to = lab.pod("server").addr4(8080).to_string();
    let r = lab
        .run_client("client", &["connect", "--to", &to, "--bytes", &(16 * MIB).to_string()])
        .expect("cross-node client");
    assert_intact(&r, 16 * MIB);
    // Delivered by agent b from 127.0.0.6: the connection went through it.
    let seen = server.expect_line("accepted", Duration::from_secs(5)).expect("accepted");
    assert!(seen.starts_with("accepted 127.0.0.6:"), "{seen}");
    assert!(lab.counter("a", "shop/client", "outbound_connected").unwrap() >= 1);
    assert!(lab.counter("b", "shop/server", "inbound_delivered").unwrap() >= 1);

    let to = lab.pod("local-server").addr4(8080).to_string();
    let r = lab
        .run_client("client", &["connect", "--to", &to, "--bytes", &(16 * MIB).to_string()])
        .expect("same-node client");
    assert_intact(&r, 16 * MIB);
    let seen = local.expect_line("accepted", Duration::from_secs(5)).expect("accepted");
    assert!(seen.starts_with("accepted 127.0.0.6:"), "{seen}");
    assert!(lab.counter("a", "shop/local-server", "inbound_delivered").unwrap() >= 1);
    assert!(lab.counter("a", "shop/client", "outbound_connected").unwrap() >= 2);
}

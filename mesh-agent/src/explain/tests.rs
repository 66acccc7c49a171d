use std::sync::Arc;

use mesh_model::{
    authz::Judging,
    model::Action,
    state::State,
    testing::{config, namespace, policy, service, workload},
};

use super::*;
use crate::{enforce::connection_verdict, plan::Tunnel};

/// shop (meshed): client (node a, local here), db (node a, local), server (node b)
/// behind Service `server` (VIP 198.18.100.9) with a DENY from `bad` attached to it;
/// server takes only shop/client (ALLOW); db denies everyone from `shop`;
/// legacy (not meshed): old.
fn state() -> State {
    let objects = config()
        .with(namespace("shop").ambient())
        .with(namespace("legacy"))
        .with(
            workload("shop", "client")
                .node("a")
                .addr("198.19.1.10")
                .service_account("client"),
        )
        .with(
            workload("shop", "bad")
                .node("a")
                .addr("198.19.1.12")
                .service_account("bad"),
        )
        .with(
            workload("shop", "db")
                .node("a")
                .addr("198.19.1.11")
                .label("app", "db"),
        )
        .with(
            workload("shop", "server")
                .node("b")
                .addr("198.19.2.10")
                .label("app", "server"),
        )
        .with(workload("legacy", "old").node("b").addr("198.19.2.20"))
        .with(
            service("shop", "server")
                .vip("198.18.100.9")
                .select("app", "server")
                .port(80, 7000),
        )
        .with(
            service("shop", "web")
                .vip("198.18.100.20")
                .select("app", "server")
                .port(80, 7000)
                .app_protocol("http"),
        )
        .with(
            policy("shop", "server-from-client")
                .select("app", "server")
                .from_principal("cluster.local/ns/shop/sa/client"),
        )
        .with(
            policy("shop", "no-db")
                .select("app", "db")
                .action(Action::Deny)
                .from_principal("*"),
        );
    State::compile(1, Arc::new(objects), None).expect("state")
}

fn local(ip: IpAddr) -> bool {
    ip.to_string().starts_with("198.19.1.")
}

/// The plan inputs of node a's agent over `state`.
fn inputs(state: &State) -> plan::Inputs<'_> {
    plan::Inputs {
        state,
        is_local: &local,
        trust_domain: "cluster.local",
        tunnel: Tunnel::Hbone,
    }
}

#[test]
fn explain_and_the_data_path_agree_on_a_table_of_cases() {
    let state = state();
    let inputs = inputs(&state);
    // (source, target, verdict, plan starts with, destination, policy that matches)
    let cases = [
        (
            "shop/client",
            "198.19.2.10:7000",
            "allow",
            "HBONE",
            Some("shop/server"),
            Some("shop/server-from-client"),
        ),
        (
            "shop/bad",
            "198.19.2.10:7000",
            "deny",
            "HBONE",
            Some("shop/server"),
            None,
        ),
        (
            "shop/client",
            "198.18.100.9:80",
            "allow",
            "HBONE",
            Some("shop/server"),
            Some("shop/server-from-client"),
        ),
        (
            "shop/client",
            "198.19.1.11:5432",
            "deny",
            "same node",
            Some("shop/db"),
            Some("shop/no-db"),
        ),
        (
            "shop/client",
            "198.19.2.20:80",
            "allow",
            "passthrough",
            None,
            None,
        ),
        // HTTP to a Service: the waypoint takes the connection, requests are judged there.
        (
            "shop/bad",
            "198.18.100.20:80",
            "allow",
            "this node's waypoint",
            None,
            None,
        ),
    ];
    for (source, target, verdict, plan_kind, destination, matching) in cases {
        let e = explain(&inputs, source, target).expect("explained");
        let what = format!("{source} -> {target}: {e:#?}");
        assert_eq!(e.verdict, verdict, "{what}");
        assert!(e.plan.starts_with(plan_kind), "{what}");
        assert_eq!(e.destination.as_deref(), destination, "{what}");
        let matched: Vec<&str> = e
            .policies
            .iter()
            .filter(|p| p.matches)
            .map(|p| p.policy.as_str())
            .collect();
        assert_eq!(matched.first().copied(), matching, "{what}");
        // The data path's own decision for the destination: plan, then the
        // destination's policies through the verdict function enforce uses.
        let route = match plan::plan(&inputs, target.parse().unwrap()) {
            Ok(Plan::Connect(route)) => route,
            Ok(Plan::Waypoint(_)) => continue,
            Err(e) => panic!("{e}: {what}"),
        };
        let data_path = match state
            .workloads_by_ip
            .get(&route.addr().ip())
            .filter(|w| w.captured)
        {
            Some(w) => {
                let id = Identity::new("cluster.local", "shop", source.split('/').nth(1).unwrap());
                let src = state.workloads.iter().find(|x| x.key() == source).unwrap();
                let caller = Caller {
                    identity: Some(&id),
                    ip: src.addresses()[0],
                };
                let v = connection_verdict(
                    w.policies.iter().map(AsRef::as_ref),
                    caller,
                    route.addr(),
                    Judging::L4Only,
                );
                if v.decision == Decision::Allow {
                    "allow"
                } else {
                    "deny"
                }
            }
            None => "allow",
        };
        assert_eq!(e.verdict, data_path, "{what}");
    }
}

#[test]
fn unknown_pods_and_targets_are_refused_with_a_reason() {
    let state = state();
    let inputs = inputs(&state);
    assert_eq!(
        explain(&inputs, "shop/nobody", "198.19.2.10:7000"),
        Err(Error::NoSuchPod("shop/nobody".into()))
    );
    assert_eq!(
        explain(&inputs, "shop/client", "server"),
        Err(Error::BadTarget("server".into()))
    );
}

use std::net::{IpAddr, SocketAddr};

use mesh_model::{
    model::Objects,
    state::State,
    testing::{config, namespace, policy, service, workload, yaml},
};

use super::*;

fn sa(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

/// shop (meshed): web-1 (node a, local here), web-2 (node b), api-1 (node b, L7
/// policy), a shared waypoint; legacy (not meshed): old-1.
fn objects() -> Objects {
    config()
        .with(namespace("shop").ambient())
        .with(namespace("legacy"))
        .with(
            workload("shop", "web-1")
                .node("a")
                .addr("198.19.1.10")
                .addr("2001:db8:1:1::10")
                .label("app", "web"),
        )
        .with(
            workload("shop", "web-2")
                .node("b")
                .addr("198.19.2.10")
                .label("app", "web"),
        )
        .with(
            workload("shop", "api-1")
                .node("b")
                .addr("198.19.2.11")
                .label("app", "api"),
        )
        .with(
            workload("shop", "wp")
                .node("b")
                .addr("198.19.2.99")
                .label("ferrymesh.io/dataplane-mode", "none")
                .service_account("wp-sa"),
        )
        .with(workload("legacy", "old-1").node("b").addr("198.19.2.20"))
        .with(
            service("shop", "web")
                .vip("198.18.100.1")
                .vip("2001:db8:100::1")
                .select("app", "web")
                .port(80, 8080)
                .port(81, 8081)
                .app_protocol("http"),
        )
        .with(
            service("shop", "api")
                .vip("198.18.100.3")
                .select("app", "api")
                .port(80, 8080),
        )
        .with(
            service("shop", "empty")
                .vip("198.18.100.2")
                .select("app", "nobody")
                .port(80, 80),
        )
        .with(
            service("shop", "behind")
                .vip("198.18.100.4")
                .select("app", "web")
                .port(80, 8080)
                .label("ferrymesh.io/use-waypoint", "wp"),
        )
        .with(
            policy("shop", "api-get")
                .select("app", "api")
                .to_method("GET"),
        )
}

/// A plan in one line, for tables.
fn show(p: &Result<Plan, PlanError>) -> String {
    match p {
        Ok(Plan::Connect(r)) => show_route(r),
        Ok(Plan::Waypoint(Parent::Service { service, port })) => {
            format!("waypoint for service {}:{port}", service.key())
        }
        Ok(Plan::Waypoint(Parent::Workload { workload })) => {
            format!("waypoint for workload {}", workload.key())
        }
        Ok(Plan::Waypoint(Parent::Gateway { key, .. })) => format!("gateway {key}"),
        Err(e) => format!("error: {e}"),
    }
}

fn show_route(r: &Route) -> String {
    match r {
        Route::SharedWaypoint { waypoint, tunnel } => format!(
            "shared waypoint {waypoint} via {} as {} for {}",
            tunnel.via, tunnel.identity, tunnel.target
        ),
        Route::SameNode { workload, addr } => format!("same node {workload} at {addr}"),
        Route::Hbone { workload, tunnel } => format!(
            "hbone {workload} via {} as {} for {}",
            tunnel.via, tunnel.identity, tunnel.target
        ),
        Route::Passthrough { addr, why } => format!("passthrough {addr} ({why:?})"),
    }
}

/// Where a plan is made: a captured connection, or the waypoint's upstream.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    Captured,
    Upstream,
}

struct Case {
    name: &'static str,
    dst: &'static str,
    stage: Stage,
    tunnel: Tunnel,
    want: &'static str,
}

const fn case(name: &'static str, dst: &'static str, want: &'static str) -> Case {
    Case {
        name,
        dst,
        stage: Stage::Captured,
        tunnel: Tunnel::Hbone,
        want,
    }
}

fn plan_for(state: &State, dst: &str, stage: Stage, tunnel: Tunnel) -> Result<Plan, PlanError> {
    let web_1: [IpAddr; 2] = [
        "198.19.1.10".parse().expect("ip"),
        "2001:db8:1:1::10".parse().expect("ip"),
    ];
    let local = |ip: IpAddr| web_1.contains(&ip);
    let inputs = super::Inputs {
        state,
        is_local: &local,
        trust_domain: "cluster.local",
        tunnel,
    };
    match stage {
        Stage::Captured => plan(&inputs, sa(dst)),
        Stage::Upstream => route(&inputs, sa(dst)).map(Plan::Connect),
    }
}

#[test]
fn how_connections_leave_a_pod() {
    let cases = [
        case("a pod on another node: HBONE to it, as its identity", "198.19.2.10:9000",
            "hbone shop/web-2 via 198.19.2.10:15008 as spiffe://cluster.local/ns/shop/sa/default for 198.19.2.10:9000"),
        case("a pod on this node: same node", "198.19.1.10:9000", "same node shop/web-1 at 198.19.1.10:9000"),
        case("a v4-mapped address is canonicalised", "[::ffff:198.19.2.10]:9000",
            "hbone shop/web-2 via 198.19.2.10:15008 as spiffe://cluster.local/ns/shop/sa/default for 198.19.2.10:9000"),
        case("a pod outside the mesh: plaintext", "198.19.2.20:80", "passthrough 198.19.2.20:80 (NotMeshed)"),
        case("an unknown address: plaintext", "198.51.100.7:443", "passthrough 198.51.100.7:443 (NotMeshed)"),
        case("a VIP on the IPv6 family picks the IPv6 endpoint and the target port", "[2001:db8:100::1]:80",
            "same node shop/web-1 at [2001:db8:1:1::10]:8080"),
        case("an appProtocol http port: the waypoint", "198.18.100.1:81", "waypoint for service shop/web:81"),
        case("a Service whose endpoints have L7 policy: the waypoint", "198.18.100.3:80", "waypoint for service shop/api:80"),
        case("that pod addressed directly: the waypoint", "198.19.2.11:80", "waypoint for workload shop/api-1"),
        case("a Service with use-waypoint: HBONE to the waypoint, target the VIP", "198.18.100.4:80",
            "shared waypoint shop/wp via 198.19.2.99:15008 as spiffe://cluster.local/ns/shop/sa/wp-sa for 198.18.100.4:80"),
        case("a VIP on an unknown port", "198.18.100.3:81", "error: service shop/api has no port 81; check the Service's spec.ports"),
        case("a Service without endpoints", "198.18.100.2:80",
            "error: service shop/empty port 80 has no endpoint of this address family; check the Service's selector and the workloads' labels and addresses"),
        Case {
            stage: Stage::Upstream,
            ..case("the waypoint's upstream to an L7 pod: direct, not the waypoint again", "198.19.2.11:8080",
                "hbone shop/api-1 via 198.19.2.11:15008 as spiffe://cluster.local/ns/shop/sa/default for 198.19.2.11:8080")
        },
        Case {
            tunnel: Tunnel::Plaintext,
            ..case("--tunnel plaintext: a remote meshed pod in plaintext", "198.19.2.10:9000",
                "passthrough 198.19.2.10:9000 (PlaintextTunnel)")
        },
        Case {
            tunnel: Tunnel::Plaintext,
            ..case("--tunnel plaintext: same node still direct", "198.19.1.10:9000", "same node shop/web-1 at 198.19.1.10:9000")
        },
    ];
    let state = objects().state();
    for c in cases {
        let got = show(&plan_for(&state, c.dst, c.stage, c.tunnel));
        assert_eq!(got, c.want, "{}", c.name);
    }
}

#[test]
fn what_makes_a_service_l7() {
    let route = yaml("apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r, namespace: shop}\nspec:\n  parentRefs: [{kind: Service, name: api, port: 80}]\n  rules: [{backendRefs: [{name: api, port: 80}]}]\n");
    let traffic = yaml("apiVersion: ferrymesh.io/v1alpha1\nkind: TrafficPolicy\nmetadata: {name: t, namespace: shop}\nspec:\n  targetRefs: [{kind: Service, name: empty}]\n  timeout: {request: 1s}\n");
    let l4_only = policy("shop", "api-get").select("app", "api").to_port(80);
    let cases: [(&str, Objects, &str, bool); 4] = [
        (
            "an L4-only policy stays L4",
            without_l7_policy().with(l4_only),
            "198.18.100.3:80",
            false,
        ),
        (
            "a route on the port",
            {
                let mut o = without_l7_policy();
                o.extend(route);
                o
            },
            "198.18.100.3:80",
            true,
        ),
        (
            "a TrafficPolicy on the Service",
            {
                let mut o = objects();
                o.extend(traffic);
                o
            },
            "198.18.100.2:80",
            true,
        ),
        (
            "no L7 configuration",
            without_l7_policy(),
            "198.18.100.3:80",
            false,
        ),
    ];
    for (name, o, dst, l7) in cases {
        let state = o.state();
        let p = plan_for(&state, dst, Stage::Captured, Tunnel::Hbone);
        assert_eq!(
            matches!(p, Ok(Plan::Waypoint(_))),
            l7,
            "{name}: {}",
            show(&p)
        );
    }
}

fn without_l7_policy() -> Objects {
    let mut o = objects();
    o.authorization_policies.clear();
    o
}

#[test]
fn a_vip_round_robins_over_its_endpoints() {
    let state = objects().state();
    let picks: Vec<Option<SocketAddr>> = (0..4)
        .map(|_| {
            plan_for(&state, "198.18.100.4:80", Stage::Upstream, Tunnel::Hbone)
                .ok()
                .and_then(|p| match p {
                    Plan::Connect(r) => Some(r.addr()),
                    Plan::Waypoint(_) => None,
                })
        })
        .collect();
    let (a, b) = (Some(sa("198.19.1.10:8080")), Some(sa("198.19.2.10:8080")));
    assert_eq!(picks, vec![a, b, a, b]);
}

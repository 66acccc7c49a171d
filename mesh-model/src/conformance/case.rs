//! One conformance case: what is asked, what Istio answers, and the check that
//! runs it against compiled objects.
use std::sync::Arc;

use crate::{
    authz::{self, Connection, Request, L7},
    identity::Identity,
    model::Objects,
    state::State,
    testing::{namespace, service, workload},
};

/// Who asks.
#[derive(Debug, Clone, Copy)]
pub enum From {
    /// `cluster.local/ns/foo/sa/sleep` at 10.0.0.1.
    Sleep,
    /// `cluster.local/ns/bar/sa/client` at 10.0.1.1.
    Other,
    /// No certificate, at 10.0.0.9.
    Plaintext,
}

/// Whether requests are judged after the L4 check.
#[derive(Debug, Clone, Copy)]
pub enum Judging {
    /// Only the L4 check decides (ztunnel without a waypoint).
    L4Only,
    /// L7 judges each request afterwards.
    PerRequest,
}

/// What is asked of the policies of `foo/httpbin` (10.0.0.2), its Service
/// `foo/httpbin` or the Gateway `foo/ingress`'s workload.
#[derive(Debug, Clone)]
pub enum Ask {
    L4(From, u16, Judging),
    /// `(from, port, method, path, host, header, aud claim)`.
    Http(
        From,
        u16,
        &'static str,
        &'static str,
        &'static str,
        Option<(&'static str, &'static str)>,
        Option<&'static str>,
    ),
    /// Plaintext to this port of httpbin: refused by PeerAuthentication?
    Plaintext(u16),
    /// A request for `path` addressed to the Service (at its waypoint).
    ServiceHttp(From, &'static str),
    /// A connection to the Gateway's workload.
    Gateway(From),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Want {
    Allow,
    Deny,
    /// The config is refused with a message holding this (Istio's webhook).
    Refused(&'static str),
    /// Enforced decision, and what the dry-run policies would decide.
    DryRun {
        allow: bool,
        would_allow: bool,
    },
    /// PeerAuthentication: plaintext refused.
    Strict(bool),
}

pub struct Case {
    pub name: &'static str,
    /// Where Istio's verdict comes from.
    pub source: &'static str,
    pub yaml: String,
    pub checks: Vec<(Ask, Want)>,
}

/// A case: its name, its source, its objects and what is asked with Istio's answers.
pub fn case(
    name: &'static str,
    source: &'static str,
    yaml: String,
    checks: Vec<(Ask, Want)>,
) -> Case {
    Case {
        name,
        source,
        yaml,
        checks,
    }
}

const SLEEP: &str = "spiffe://cluster.local/ns/foo/sa/sleep";
const OTHER: &str = "spiffe://cluster.local/ns/bar/sa/client";

/// An AuthorizationPolicy in `ns` named `name` with `spec` (YAML flow style).
pub fn ap(ns: &str, name: &str, spec: &str) -> String {
    format!("---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {spec}\n")
}

/// A PeerAuthentication; `created` is its creationTimestamp, if any.
pub fn pa(ns: &str, name: &str, created: Option<&str>, spec: &str) -> String {
    let created = created.map_or(String::new(), |c| format!(", creationTimestamp: \"{c}\""));
    format!("---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: {name}, namespace: {ns}{created}}}\nspec: {spec}\n")
}

/// The namespaces, workloads and Service every case runs against.
pub fn fixtures(mut o: Objects) -> Objects {
    for ns in [
        "foo",
        "bar",
        "istio-system",
        "mesh-root",
        "ferrymesh-system",
    ] {
        o = o.with(namespace(ns).ambient());
    }
    let httpbin = workload("foo", "httpbin")
        .node("a")
        .addr("10.0.0.2")
        .label("app", "httpbin")
        .service_account("httpbin");
    let gateway = workload("foo", "ingress-1")
        .node("a")
        .addr("10.0.0.3")
        .label(authz::GATEWAY_NAME_LABEL, "ingress");
    let svc = service("foo", "httpbin")
        .vip("10.96.0.2")
        .select("app", "httpbin")
        .port(80, 8080);
    o.with(httpbin).with(gateway).with(svc)
}

fn caller(f: From) -> (Option<Identity>, std::net::IpAddr) {
    let parse = |s: &str| s.parse::<Identity>().ok();
    let ip = |s: &str| s.parse().unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]));
    match f {
        From::Sleep => (parse(SLEEP), ip("10.0.0.1")),
        From::Other => (parse(OTHER), ip("10.0.1.1")),
        From::Plaintext => (None, ip("10.0.0.9")),
    }
}

fn verdict_of(
    policies: &[Arc<authz::Policy>],
    from: From,
    (dst, port): (&str, u16),
    l7: L7<'_>,
) -> authz::Verdict {
    let (id, ip) = caller(from);
    let c = Connection {
        source: id.as_ref(),
        source_ip: ip,
        destination_ip: dst.parse().unwrap_or(ip),
        destination_port: port,
        l7,
    };
    authz::authorize(policies.iter().map(AsRef::as_ref), &c)
}

/// An HTTP request's verdict under `policies`.
fn http(policies: &[Arc<authz::Policy>], ask: &Ask, dst: &str) -> authz::Verdict {
    let Ask::Http(from, port, method, path, host, header, aud) = ask else {
        return verdict_of(policies, From::Plaintext, (dst, 0), L7::None);
    };
    let mut headers = http::HeaderMap::new();
    if let Some((k, v)) = header {
        if let (Ok(k), Ok(v)) = (
            http::HeaderName::from_bytes(k.as_bytes()),
            http::HeaderValue::from_str(v),
        ) {
            headers.insert(k, v);
        }
    }
    let claims = aud.map(|a| serde_json::json!({"iss": "https://issuer", "sub": "u", "aud": a}));
    let request = Request {
        method,
        path,
        host,
        headers: &headers,
        principal: claims.as_ref().map(|_| "https://issuer/u"),
        claims: claims.as_ref(),
        remote_ip: caller(*from).1,
    };
    verdict_of(policies, *from, (dst, *port), L7::Request(&request))
}

fn outcome(state: &State, ask: &Ask, dry_run: bool) -> Want {
    let find = |ip: &str| {
        ip.parse()
            .ok()
            .and_then(|ip| state.workloads_by_ip.get(&ip))
    };
    let (Some(httpbin), Some(gateway)) = (find("10.0.0.2"), find("10.0.0.3")) else {
        return Want::Refused("fixtures missing");
    };
    let v = match ask {
        Ask::Plaintext(port) => return Want::Strict(httpbin.mtls.strict_on(*port)),
        Ask::L4(from, port, judging) => {
            let l7 = match judging {
                Judging::L4Only => L7::None,
                Judging::PerRequest => L7::PerRequest,
            };
            verdict_of(&httpbin.policies, *from, ("10.0.0.2", *port), l7)
        }
        Ask::Http(..) => http(&httpbin.policies, ask, "10.0.0.2"),
        Ask::ServiceHttp(from, path) => {
            let Some(svc) = state.services_by_key.get("foo/httpbin") else {
                return Want::Refused("service missing");
            };
            let ask = Ask::Http(*from, 80, "GET", path, "httpbin.foo", None, None);
            http(&svc.policies, &ask, "10.96.0.2")
        }
        Ask::Gateway(from) => verdict_of(&gateway.policies, *from, ("10.0.0.3", 8080), L7::None),
    };
    if dry_run {
        return Want::DryRun {
            allow: v.allowed(),
            would_allow: v.dry_run.iter().all(|d| d.would_allow),
        };
    }
    if v.allowed() {
        Want::Allow
    } else {
        Want::Deny
    }
}

/// Checks `case` against `objects` (the case's objects, or the message refusing
/// them); `cluster`: where a file is refused, a cluster enforces the object's
/// fail-closed stand-in (an ALLOW that allows nothing, a DENY of everything, a
/// STRICT PeerAuthentication). Returns what disagrees.
pub fn check(case: &Case, objects: Result<Objects, String>, cluster: bool) -> Vec<String> {
    let state = objects.and_then(|o| {
        State::compile(1, Arc::new(fixtures(o)), None)
            .map_err(|e| format!("{} {}: {}", e.kind, e.name, e.message))
    });
    let mut failures = Vec::new();
    for (ask, want) in &case.checks {
        let got = match (&state, want) {
            (Err(e), Want::Refused(m)) if !cluster && e.contains(m) => continue,
            (Err(e), _) => Want::Refused(Box::leak(e.clone().into_boxed_str())),
            (Ok(s), w) => outcome(s, ask, matches!(w, Want::DryRun { .. })),
        };
        let want = match (want, ask, cluster) {
            (Want::Refused(_), Ask::Plaintext(_), true) => Want::Strict(true),
            (Want::Refused(_), _, true) => Want::Deny,
            (w, ..) => w.clone(),
        };
        if got != want {
            failures.push(format!(
                "{} ({}): {ask:?}: want {want:?}, got {got:?}",
                case.name, case.source
            ));
        }
    }
    failures
}

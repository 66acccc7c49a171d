//! Route: the rule a request follows. A Service parent with routes picks among
//! them (no match: 404 `NR`), one without gets its implicit rule; a workload
//! addressed directly goes to itself; a Gateway picks among its routes.
use std::sync::Arc;

use http::{request::Parts, StatusCode};
use mesh_model::{
    l7::table::{ParentKey, RouteRule},
    state::State,
};

use crate::plan::Parent;
use crate::waypoint::{
    conn::Conn,
    log::RequestLog,
    reply::{LocalReply, ResponseFlag},
    router::{self, RequestView},
};

fn no_route() -> LocalReply {
    LocalReply::new(
        StatusCode::NOT_FOUND,
        "no route matches\n",
        ResponseFlag::NoRoute,
    )
}

pub fn select(
    conn: &Conn,
    state: &State,
    parts: &Parts,
    grpc: bool,
    log: &mut RequestLog,
) -> Result<Routed, LocalReply> {
    let table = &state.l7;
    let path = parts.uri.path();
    // The caller's namespace: the pod's own (node waypoint) or the HBONE peer's
    // (shared waypoint); unknown at the edge.
    let namespace = conn.source.as_ref().map(|i| i.namespace.as_str());
    let view = |port| RequestView {
        method: parts.method.as_str(),
        path,
        query: parts.uri.query(),
        headers: &parts.headers,
        grpc,
        port,
        namespace,
        host: &log.authority,
    };
    let (rule, matched) = match &conn.parent {
        Parent::Service { service, port } => {
            let key = service.key();
            log.destination_service = key.clone();
            match table.parents.get(&ParentKey::Service(key.clone())) {
                Some(p)
                    if router::applicable(&p.entries, namespace, *port)
                        .next()
                        .is_some() =>
                {
                    let e = router::select(&p.entries, &view(*port)).ok_or_else(no_route)?;
                    (e.rule.clone(), e.m.path.clone())
                }
                _ => (Arc::new(table.default_rule(&key, *port)), None),
            }
        }
        Parent::Workload { workload } => {
            log.destination_service = workload.key();
            (Arc::new(RouteRule::direct(workload.key())), None)
        }
        Parent::Gateway { key, .. } => {
            log.destination_service = format!("Gateway {key}");
            let e = table
                .parents
                .get(&ParentKey::Gateway(key.clone()))
                .and_then(|p| router::select(&p.entries, &view(conn.original.port())))
                .ok_or_else(no_route)?;
            (e.rule.clone(), e.m.path.clone())
        }
    };
    log.route = match &rule.rule {
        Some(r) => format!("{}/{r}", rule.route),
        None => rule.route.clone(),
    };
    Ok(Routed { rule, matched })
}

/// The `route` phase's result: the rule and the path condition that matched.
pub struct Routed {
    pub rule: Arc<RouteRule>,
    pub matched: Option<mesh_model::l7::table::PathCond>,
}

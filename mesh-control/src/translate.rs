//! Kubernetes API objects to the model the agents use. No I/O: table-tested.
use std::{collections::BTreeMap, sync::Arc};

use k8s_openapi::api::core::v1::{Namespace as KNamespace, Pod, Service as KService};
use kube::api::DynamicObject;
use mesh_model::model::{self, ObjectMeta, Objects};
use serde::de::DeserializeOwned;

/// The annotations the model reads (others, such as kubectl's last applied
/// configuration, can be large and mean nothing to agents).
const KEPT_ANNOTATIONS: [&str; 2] = [model::DRY_RUN_ANNOTATION, model::FAST_PATH_ANNOTATION];

fn kept_annotations(a: Option<&BTreeMap<String, String>>) -> model::Labels {
    a.into_iter()
        .flatten()
        .filter(|(k, _)| KEPT_ANNOTATIONS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn meta(m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> ObjectMeta {
    ObjectMeta {
        name: m.name.clone().unwrap_or_default(),
        namespace: m.namespace.clone(),
        labels: m.labels.clone().unwrap_or_default().into(),
        annotations: kept_annotations(m.annotations.as_ref()),
        // Only PeerAuthentication precedence reads it (`custom`, `peer_stand_in`):
        // kept off the rest, where it would only make versions.
        creation_timestamp: None,
        generation: None,
    }
}

/// RFC 3339 in UTC with seconds, as the API server writes it (so strings order
/// as times).
fn timestamp(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> String {
    t.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

pub fn namespace(n: &KNamespace) -> model::Namespace {
    model::Namespace {
        api_version: "v1".into(),
        kind: "Namespace".into(),
        metadata: ObjectMeta {
            namespace: None,
            ..meta(&n.metadata)
        },
        spec: None,
    }
}

/// A pod that has a node and addresses, runs in its own network namespace and is
/// not finished. The agent finds its netns itself (cluster mode).
pub fn workload(p: &Pod) -> Option<model::Workload> {
    let spec = p.spec.as_ref()?;
    let status = p.status.as_ref()?;
    if spec.host_network == Some(true) {
        return None;
    }
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return None;
    }
    let node = spec.node_name.clone()?;
    let mut addresses: Vec<std::net::IpAddr> = status
        .pod_ips
        .iter()
        .flatten()
        .filter_map(|ip| ip.ip.parse().ok())
        .collect();
    if addresses.is_empty() {
        addresses.extend(
            status
                .pod_ip
                .as_deref()
                .and_then(|ip| ip.parse::<std::net::IpAddr>().ok()),
        );
    }
    // At most one of each family, as the model wants.
    let v4 = addresses.iter().copied().find(std::net::IpAddr::is_ipv4);
    let v6 = addresses.iter().copied().find(std::net::IpAddr::is_ipv6);
    let addresses: Vec<_> = v4.into_iter().chain(v6).collect();
    if addresses.is_empty() {
        return None;
    }
    Some(model::Workload {
        api_version: "ferrymesh.io/v1alpha1".into(),
        kind: "Workload".into(),
        metadata: meta(&p.metadata),
        spec: model::WorkloadSpec {
            node,
            service_account: spec
                .service_account_name
                .clone()
                .unwrap_or_else(|| "default".into()),
            addresses,
            netns: None,
        },
    })
}

/// A Service with cluster IPs (headless ones have none to capture). Ports other
/// than TCP are left out; a named targetPort falls back to the port.
pub fn service(s: &KService) -> Option<model::Service> {
    let spec = s.spec.as_ref()?;
    let ips: Vec<std::net::IpAddr> = spec
        .cluster_ips
        .iter()
        .flatten()
        .chain(spec.cluster_ip.iter())
        .filter_map(|ip| ip.parse().ok())
        .collect();
    let mut cluster_ips = Vec::new();
    for ip in ips {
        if !cluster_ips.contains(&ip) {
            cluster_ips.push(ip);
        }
    }
    if cluster_ips.is_empty() {
        return None;
    }
    let ports = spec
        .ports
        .iter()
        .flatten()
        .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
        .filter_map(|p| {
            let port = u16::try_from(p.port).ok()?;
            let target = match &p.target_port {
                Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(t)) => {
                    u16::try_from(*t).ok()
                }
                _ => None,
            };
            Some(model::ServicePort {
                name: p.name.clone(),
                port,
                target_port: target,
                protocol: "TCP".into(),
                app_protocol: p.app_protocol.clone(),
            })
        })
        .collect();
    Some(model::Service {
        api_version: "v1".into(),
        kind: "Service".into(),
        metadata: meta(&s.metadata),
        spec: model::ServiceSpec {
            cluster_ips,
            selector: spec.selector.clone().unwrap_or_default().into(),
            ports,
        },
    })
}

/// A custom resource (route, policy) into its model type: apiVersion, kind, the
/// metadata the model keeps, and spec; status and server-set fields are dropped.
pub fn custom<T: DeserializeOwned>(o: &DynamicObject) -> Result<T, String> {
    let types = o.types.as_ref();
    let v = serde_json::json!({
        "apiVersion": types.map(|t| t.api_version.clone()).unwrap_or_default(),
        "kind": types.map(|t| t.kind.clone()).unwrap_or_default(),
        "metadata": {
            "name": o.metadata.name.clone().unwrap_or_default(),
            "namespace": o.metadata.namespace.clone(),
            "labels": o.metadata.labels.clone().unwrap_or_default(),
            "annotations": kept_annotations(o.metadata.annotations.as_ref()),
            // Only PeerAuthentication precedence (oldest wins) reads it.
            "creationTimestamp": o.metadata.creation_timestamp.as_ref()
                .filter(|_| types.is_some_and(|t| t.kind == "PeerAuthentication"))
                .map(timestamp),
            // Route conditions report the generation they were computed from.
            "generation": o.metadata.generation
                .filter(|_| types.is_some_and(|t| t.kind.ends_with("Route"))),
        },
        "spec": o.data.get("spec").cloned().unwrap_or(serde_json::json!({})),
    });
    serde_json::from_value(v).map_err(|e| {
        format!(
            "{} {}/{}: {e}",
            types.map(|t| t.kind.as_str()).unwrap_or("object"),
            o.metadata.namespace.as_deref().unwrap_or(""),
            o.metadata.name.as_deref().unwrap_or("")
        )
    })
}

/// The pods' workloads, one per address: while a terminating pod and its
/// successor briefly share an IP, the pod not being deleted keeps it (the other is
/// left out and reported) instead of the whole config being refused.
fn unique_addresses(pods: &[Pod], problems: &mut Vec<String>) -> Vec<Arc<model::Workload>> {
    let mut ordered: Vec<&Pod> = pods.iter().collect();
    // Pods not being deleted first; then by name, for a stable choice.
    ordered.sort_by_key(|p| {
        (
            p.metadata.deletion_timestamp.is_some(),
            p.metadata.name.clone(),
        )
    });
    let mut taken = std::collections::HashMap::new();
    let mut out = Vec::new();
    for p in ordered {
        let Some(w) = workload(p) else { continue };
        let key = format!("{}/{}", w.metadata.namespace(), w.metadata.name);
        if let Some(owner) = w.spec.addresses.iter().find_map(|a| taken.get(a)) {
            problems.push(format!("pod {key} left out: its address is {owner}'s (a pod that is terminating shares it)"));
            continue;
        }
        for a in &w.spec.addresses {
            taken.insert(*a, key.clone());
        }
        out.push(Arc::new(w));
    }
    out
}

/// The selector of an object that did not translate, if that part reads; else
/// None (the whole namespace: wider is stricter here).
fn salvaged_selector(d: &DynamicObject) -> Option<model::LabelSelector> {
    let s = d.data.get("spec")?.get("selector")?.clone();
    let s: model::LabelSelector = serde_json::from_value(s).ok()?;
    // A selector Istio refuses (an empty key, a wildcard) selects nothing sure.
    mesh_model::authz::validate::selector_ok(&s).then_some(s)
}

/// An unreadable AuthorizationPolicy, fail-closed: an ALLOW policy becomes one
/// that allows nothing, anything else (DENY, CUSTOM, an unreadable action) a DENY
/// of everything for the workloads it selects; AUDIT changes no access and is left
/// out.
fn authz_stand_in(d: &DynamicObject) -> Option<model::AuthorizationPolicy> {
    let action = d
        .data
        .get("spec")
        .and_then(|s| s.get("action"))
        .and_then(|a| a.as_str())
        .unwrap_or("ALLOW");
    let (action, rules) = match action {
        "AUDIT" => return None,
        "ALLOW" => (model::Action::Allow, Vec::new()),
        _ => (model::Action::Deny, vec![model::Rule::default()]),
    };
    Some(model::AuthorizationPolicy {
        api_version: "security.istio.io/v1".into(),
        kind: "AuthorizationPolicy".into(),
        metadata: meta(&d.metadata),
        spec: model::AuthorizationPolicySpec {
            selector: salvaged_selector(d),
            action,
            rules,
            ..Default::default()
        },
    })
}

/// An unreadable PeerAuthentication, fail-closed: STRICT for what it selects.
fn peer_stand_in(d: &DynamicObject) -> model::PeerAuthentication {
    model::PeerAuthentication {
        api_version: "security.istio.io/v1".into(),
        kind: "PeerAuthentication".into(),
        metadata: ObjectMeta {
            creation_timestamp: d.metadata.creation_timestamp.as_ref().map(timestamp),
            ..meta(&d.metadata)
        },
        spec: model::PeerAuthenticationSpec {
            selector: salvaged_selector(d),
            mtls: model::Mtls {
                mode: model::MtlsMode::Strict,
                ..Default::default()
            },
            ..Default::default()
        },
    }
}

/// Everything the watchers hold, as one set of objects (sorted for stable output).
#[derive(Debug, Default, Clone)]
pub struct Inputs {
    pub namespaces: Vec<KNamespace>,
    pub pods: Vec<Pod>,
    pub services: Vec<KService>,
    /// By kind: HTTPRoute, GRPCRoute, AuthorizationPolicy, PeerAuthentication,
    /// RequestAuthentication, TrafficPolicy, DirectResponse.
    pub custom: BTreeMap<String, Vec<DynamicObject>>,
    /// The mesh's root namespace (empty: Istio's default), sent as a MeshConfig.
    pub root_namespace: String,
}

/// The model from the watchers' objects; objects that do not translate are left
/// out and reported (the rest still apply).
pub fn objects(i: &Inputs) -> (Objects, Vec<String>) {
    let mut o = Objects::default();
    let mut problems = Vec::new();
    let root = match i.root_namespace.as_str() {
        "" => model::DEFAULT_ROOT_NAMESPACE,
        r => r,
    };
    o.mesh_configs = vec![Arc::new(model::MeshConfig::new(root))];
    o.namespaces = i.namespaces.iter().map(namespace).map(Arc::new).collect();
    o.workloads = unique_addresses(&i.pods, &mut problems);
    o.services = i
        .services
        .iter()
        .filter_map(service)
        .map(Arc::new)
        .collect();
    let empty = Vec::new();
    let get = |k: &str| i.custom.get(k).unwrap_or(&empty);
    macro_rules! each {
        ($kind:literal, $field:ident) => {
            for d in get($kind) {
                match custom(d) {
                    Ok(x) => o.$field.push(Arc::new(x)),
                    Err(e) => problems.push(e),
                }
            }
        };
    }
    each!("HTTPRoute", http_routes);
    each!("GRPCRoute", grpc_routes);
    // A security object that cannot be read is never just left out (a lost ALLOW
    // policy is allow-all, a lost PeerAuthentication turns STRICT off): it is
    // replaced by its fail-closed stand-in.
    for d in get("AuthorizationPolicy") {
        let read = custom(d).and_then(|x: model::AuthorizationPolicy| {
            mesh_model::authz::validate::policy(&x).map(|()| x)
        });
        match read {
            Ok(x) => o.authorization_policies.push(Arc::new(x)),
            Err(e) => {
                problems.push(format!("{e}; enforced fail-closed"));
                if let Some(p) = authz_stand_in(d) {
                    o.authorization_policies.push(Arc::new(p));
                }
            }
        }
    }
    for d in get("PeerAuthentication") {
        let read = custom(d).and_then(|x: model::PeerAuthentication| {
            mesh_model::authz::validate::peer_authentication(&x).map(|()| x)
        });
        match read {
            Ok(x) => o.peer_authentications.push(Arc::new(x)),
            Err(e) => {
                problems.push(format!("{e}; enforced as STRICT"));
                o.peer_authentications.push(Arc::new(peer_stand_in(d)));
            }
        }
    }
    each!("RequestAuthentication", request_authentications);
    each!("TrafficPolicy", traffic_policies);
    each!("DirectResponse", direct_responses);
    each!("ReferenceGrant", reference_grants);
    o.namespaces
        .sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    o.workloads.sort_by(|a, b| {
        (a.metadata.namespace(), &a.metadata.name).cmp(&(b.metadata.namespace(), &b.metadata.name))
    });
    o.services.sort_by(|a, b| {
        (a.metadata.namespace(), &a.metadata.name).cmp(&(b.metadata.namespace(), &b.metadata.name))
    });
    (o, problems)
}

#[cfg(test)]
mod tests;

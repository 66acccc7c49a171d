//! AuthorizationPolicy and PeerAuthentication, compiled; which apply to a workload
//! (or Service) is decided once, when the topology binds them (`for_workload`).
use std::{collections::BTreeMap, sync::Arc};

use crate::l7::table::BuildError as CompileError;
use crate::{
    authz::{self, Policy},
    model::{Labels, MtlsMode, Objects, PeerAuthentication},
};

/// A PeerAuthentication: its scope, modes and age.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerPolicy {
    pub name: String,
    pub namespace: String,
    /// None also for a selector without labels (Istio: namespace-wide).
    pub selector: Option<Labels>,
    pub mode: MtlsMode,
    pub ports: BTreeMap<u16, MtlsMode>,
    /// `creationTimestamp` (RFC 3339; empty in files): the oldest of equals wins.
    pub created: String,
}

impl PeerPolicy {
    fn age(&self) -> (&str, &str, &str) {
        (&self.created, &self.namespace, &self.name)
    }
}

/// The mutual TLS a workload's inbound requires, per port.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerMtls {
    /// STRICT for ports not listed.
    pub strict: bool,
    /// Ports whose mode differs from, or restates, the workload's.
    pub ports: BTreeMap<u16, bool>,
}

impl PeerMtls {
    /// Plaintext to `port` is refused.
    pub fn strict_on(&self, port: u16) -> bool {
        self.ports.get(&port).copied().unwrap_or(self.strict)
    }
}

#[derive(Debug, Default)]
pub struct Policies {
    /// The mesh's root namespace these were compiled for.
    pub root_namespace: String,
    pub authz: Vec<Arc<Policy>>,
    pub peer: Vec<PeerPolicy>,
    /// (`Kind ns/name`, what was not understood and how it is enforced instead).
    pub degraded: Vec<(String, String)>,
}

/// A PeerAuthentication's modes as enforced: one with fields ferrymesh does not
/// know counts as STRICT on every port.
fn peer_modes(p: &PeerAuthentication) -> (MtlsMode, BTreeMap<u16, MtlsMode>, Option<String>) {
    let s = &p.spec;
    let mut unknown: Vec<String> = s.unknown.keys().map(|k| format!("spec.{k}")).collect();
    unknown.extend(s.mtls.unknown.keys().map(|k| format!("spec.mtls.{k}")));
    for (port, m) in &s.port_level_mtls {
        unknown.extend(
            m.unknown
                .keys()
                .map(|k| format!("spec.portLevelMtls[{port}].{k}")),
        );
    }
    if !unknown.is_empty() {
        let why = format!("{} not known: enforced as STRICT", unknown.join(", "));
        return (MtlsMode::Strict, BTreeMap::new(), Some(why));
    }
    let ports = s
        .port_level_mtls
        .iter()
        .filter_map(|(k, m)| Some((authz::validate::port(k)?, m.mode)))
        .collect();
    (s.mtls.mode, ports, None)
}

fn selects(selector: &Option<Labels>, labels: &Labels) -> bool {
    selector
        .as_ref()
        .is_none_or(|s| s.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

fn strict(mode: MtlsMode) -> bool {
    mode == MtlsMode::Strict
}

fn invalid(kind: &'static str, meta: &crate::model::ObjectMeta, message: String) -> CompileError {
    CompileError {
        kind,
        name: format!("{}/{}", meta.namespace(), meta.name),
        message,
    }
}

fn compile_peer(
    p: &PeerAuthentication,
    degraded: &mut Vec<(String, String)>,
) -> Result<PeerPolicy, CompileError> {
    authz::validate::peer_authentication(p)
        .map_err(|m| invalid("PeerAuthentication", &p.metadata, m))?;
    let (mode, ports, why) = peer_modes(p);
    let name = format!("{}/{}", p.metadata.namespace(), p.metadata.name);
    if let Some(why) = why {
        degraded.push((format!("PeerAuthentication {name}"), why));
    }
    Ok(PeerPolicy {
        name: p.metadata.name.clone(),
        namespace: p.metadata.namespace().to_owned(),
        selector: p
            .spec
            .selector
            .as_ref()
            .map(|s| s.match_labels.clone())
            .filter(|l| !l.is_empty()),
        mode,
        ports,
        created: p.metadata.creation_timestamp.clone().unwrap_or_default(),
    })
}

impl Policies {
    pub fn compile(o: &Objects) -> Result<Policies, CompileError> {
        let root = o.root_namespace();
        let authz = o
            .authorization_policies
            .iter()
            .map(|p| {
                authz::compile(p, root)
                    .map(Arc::new)
                    .map_err(|m| invalid("AuthorizationPolicy", &p.metadata, m))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut degraded: Vec<(String, String)> = Vec::new();
        for p in &authz {
            for d in &p.degraded {
                degraded.push((format!("AuthorizationPolicy {}", p.name), d.clone()));
            }
        }
        let peer = o
            .peer_authentications
            .iter()
            .map(|p| compile_peer(p, &mut degraded))
            .collect::<Result<_, _>>()?;
        Ok(Policies {
            root_namespace: root.to_owned(),
            authz,
            peer,
            degraded,
        })
    }

    /// The AuthorizationPolicies that apply to a workload.
    pub fn for_workload(&self, namespace: &str, labels: &Labels) -> Vec<Arc<Policy>> {
        let target = authz::Target { namespace, labels };
        self.authz
            .iter()
            .filter(|p| authz::applies(p, target))
            .cloned()
            .collect()
    }

    /// The AuthorizationPolicies attached to a Service by `targetRefs`.
    pub fn for_service(&self, namespace: &str, name: &str) -> Vec<Arc<Policy>> {
        self.authz
            .iter()
            .filter(|p| authz::applies_to_service(p, namespace, name))
            .cloned()
            .collect()
    }

    /// The effective PeerAuthentication of a workload, as istiod computes it for
    /// ztunnel: the oldest mesh policy (root namespace, no selector), overridden by
    /// the oldest namespace policy, overridden by the oldest workload policy (a
    /// selector, outside the root namespace); UNSET inherits; DISABLE is as
    /// PERMISSIVE; a workload policy's `portLevelMtls` sets single ports.
    pub fn peer_mtls(&self, namespace: &str, labels: &Labels) -> PeerMtls {
        let root = self.root_namespace.as_str();
        let oldest = |f: &dyn Fn(&PeerPolicy) -> bool| {
            self.peer
                .iter()
                .filter(|p| f(p))
                .min_by(|a, b| a.age().cmp(&b.age()))
        };
        let mesh = oldest(&|p| p.namespace == root && p.selector.is_none());
        let ns =
            oldest(&|p| p.namespace == namespace && p.namespace != root && p.selector.is_none());
        let workload = oldest(&|p| {
            p.namespace == namespace
                && p.namespace != root
                && p.selector.is_some()
                && selects(&p.selector, labels)
        });
        let mut out = PeerMtls {
            strict: mesh.is_some_and(|m| strict(m.mode)),
            ports: BTreeMap::new(),
        };
        for p in ns.into_iter().chain(workload) {
            if p.mode != MtlsMode::Unset {
                out.strict = strict(p.mode);
            }
        }
        for (port, mode) in workload.iter().flat_map(|w| &w.ports) {
            let s = if *mode == MtlsMode::Unset {
                out.strict
            } else {
                strict(*mode)
            };
            out.ports.insert(*port, s);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_authentication_not_understood_counts_as_strict() {
        let pa = |spec: &str| {
            format!("apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: p, namespace: shop}}\nspec: {spec}\n")
        };
        // (spec, STRICT in force, degraded)
        let cases = [
            ("{mtls: {mode: STRICT}}", true, false),
            ("{mtls: {mode: PERMISSIVE}}", false, false),
            ("{mtls: {mode: UNSET}}", false, false),
            ("{mtls: {mode: DISABLE}}", false, false),
            ("{mtls: {mode: PERMISSIVE}, someFutureField: 1}", true, true),
            ("{mtls: {mode: PERMISSIVE, extra: x}}", true, true),
        ];
        for (spec, strict, degraded) in cases {
            let o = crate::config::parse("t", &pa(spec)).expect(spec);
            let p = Policies::compile(&o).expect("compiles");
            assert_eq!(p.peer_mtls("shop", &Labels::new()).strict, strict, "{spec}");
            assert_eq!(!p.degraded.is_empty(), degraded, "{spec}: {:?}", p.degraded);
        }
    }
}

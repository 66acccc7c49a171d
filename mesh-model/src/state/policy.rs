//! AuthorizationPolicy and PeerAuthentication, compiled; which apply to a workload
//! is decided once, when the topology binds them (`for_workload`).
use std::sync::Arc;

use crate::l7::table::BuildError as CompileError;
use crate::{
    authz::{self, Policy, ROOT_NAMESPACE},
    model::{Labels, MtlsMode, Objects},
};

/// A PeerAuthentication: its scope and mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerPolicy {
    pub namespace: String,
    pub selector: Option<Labels>,
    pub mode: MtlsMode,
}

#[derive(Debug, Default)]
pub struct Policies {
    pub authz: Vec<Arc<Policy>>,
    pub peer: Vec<PeerPolicy>,
    /// (`Kind ns/name`, what was not understood and how it is enforced instead).
    pub degraded: Vec<(String, String)>,
}

/// A PeerAuthentication's mode as enforced: one with fields ferrymesh cannot
/// judge (per-port modes, unknown fields) counts as STRICT.
fn peer_mode(p: &crate::model::PeerAuthentication) -> (MtlsMode, Option<String>) {
    let s = &p.spec;
    let mut unknown: Vec<String> = s.unknown.keys().map(|k| format!("spec.{k}")).collect();
    unknown.extend(s.mtls.unknown.keys().map(|k| format!("spec.mtls.{k}")));
    if !s.port_level_mtls.is_empty() {
        unknown.push("spec.portLevelMtls".into());
    }
    if unknown.is_empty() {
        return (s.mtls.mode, None);
    }
    let why = format!("{} not supported: enforced as STRICT", unknown.join(", "));
    (MtlsMode::Strict, Some(why))
}

fn selects(selector: &Option<Labels>, labels: &Labels) -> bool {
    selector
        .as_ref()
        .is_none_or(|s| s.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

impl Policies {
    pub fn compile(o: &Objects) -> Result<Policies, CompileError> {
        let authz = o
            .authorization_policies
            .iter()
            .map(|p| {
                authz::compile(p)
                    .map(Arc::new)
                    .map_err(|message| CompileError {
                        kind: "AuthorizationPolicy",
                        name: format!("{}/{}", p.metadata.namespace(), p.metadata.name),
                        message,
                    })
            })
            .collect::<Result<_, _>>()?;
        let mut degraded: Vec<(String, String)> = Vec::new();
        for p in &authz {
            let p: &Arc<Policy> = p;
            for d in &p.degraded {
                degraded.push((format!("AuthorizationPolicy {}", p.name), d.clone()));
            }
        }
        let peer = o
            .peer_authentications
            .iter()
            .map(|p| {
                let (mode, why) = peer_mode(p);
                if let Some(why) = why {
                    let name = format!("{}/{}", p.metadata.namespace(), p.metadata.name);
                    degraded.push((format!("PeerAuthentication {name}"), why));
                }
                PeerPolicy {
                    namespace: p.metadata.namespace().to_owned(),
                    selector: p.spec.selector.as_ref().map(|s| s.match_labels.clone()),
                    mode,
                }
            })
            .collect();
        Ok(Policies {
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

    /// PeerAuthentication STRICT applies to the workload: plaintext inbound refused.
    pub fn strict(&self, namespace: &str, labels: &Labels) -> bool {
        self.peer.iter().any(|p| {
            (p.namespace == namespace || p.namespace == ROOT_NAMESPACE)
                && p.mode == MtlsMode::Strict
                && selects(&p.selector, labels)
        })
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
            (
                "{mtls: {mode: PERMISSIVE}, portLevelMtls: {\"8080\": {mode: DISABLE}}}",
                true,
                true,
            ),
            ("{mtls: {mode: PERMISSIVE}, someFutureField: 1}", true, true),
            ("{mtls: {mode: PERMISSIVE, extra: x}}", true, true),
        ];
        for (spec, strict, degraded) in cases {
            let o = crate::config::parse("t", &pa(spec)).expect(spec);
            let p = Policies::compile(&o).expect("compiles");
            assert_eq!(p.strict("shop", &Labels::new()), strict, "{spec}");
            assert_eq!(!p.degraded.is_empty(), degraded, "{spec}: {:?}", p.degraded);
        }
    }
}

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
        let peer = o
            .peer_authentications
            .iter()
            .map(|p| PeerPolicy {
                namespace: p.metadata.namespace().to_owned(),
                selector: p.spec.selector.as_ref().map(|s| s.match_labels.clone()),
                mode: p.spec.mtls.mode,
            })
            .collect();
        Ok(Policies { authz, peer })
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

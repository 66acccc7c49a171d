//! What the waypoint asks the table.

use crate::model::Objects;

use super::{ctx::*, policy::*, types::*};

impl Table {
    /// The implicit route of a Service that has L7 handling but no route: all
    /// requests to the Service itself, with the Service's route-side policy.
    pub fn default_rule(&self, service: &str, port: u16) -> RouteRule {
        let mut rule = RouteRule::empty(format!("Service {service}"));
        rule.backends = vec![WeightedBackend {
            backend: Backend {
                service: service.to_owned(),
                port,
            },
            weight: 1,
            unresolved: None,
            filters: Vec::new(),
        }];
        if let Some(p) = self.service_policies.get(service) {
            let ctx = Ctx {
                kind: "TrafficPolicy",
                name: service.to_owned(),
                objects: &Objects::default(),
            };
            // Validated when the table was built.
            let _ = apply_policy(&ctx, &mut rule, None, p);
        }
        rule
    }

    /// Whether a Service has routes or route-side policy (L7 handling).
    pub fn service_has_l7(&self, service: &str, port: u16) -> bool {
        self.parents
            .get(&ParentKey::Service(service.to_owned()))
            .is_some_and(|p| p.entries.iter().any(|e| e.port.is_none_or(|x| x == port)))
            || self.service_policies.contains_key(service)
    }

    /// No Service has route-side policy (tests and explanations).
    pub fn service_policies_is_empty(&self) -> bool {
        self.service_policies.is_empty() && self.backend_policies.is_empty()
    }
}

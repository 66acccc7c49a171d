//! Builders that read like specs, for tests of this crate and of its users (feature
//! `testing`): `workload("shop", "web-1").node("a").addr("198.19.1.10").label("app",
//! "web")`, `service("shop", "web").vip("198.18.100.1").select("app", "web").port(80,
//! 8080)`, `policy("shop", "p").select("app", "web").from_principal("...")`, collected
//! with `config().with(...)` and compiled with `.state()`.
use std::{net::IpAddr, sync::Arc};

use crate::{
    model::{self, *},
    state::State,
};

fn meta(namespace: Option<&str>, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: name.to_owned(),
        namespace: namespace.map(str::to_owned),
        ..ObjectMeta::default()
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse()
        .unwrap_or_else(|_| panic!("{s:?} is not an IP address"))
}

/// A namespace; `.ambient()` puts it in the mesh.
pub fn namespace(name: &str) -> Namespace {
    Namespace {
        api_version: "v1".into(),
        kind: "Namespace".into(),
        metadata: meta(None, name),
        spec: None,
    }
}

impl Namespace {
    pub fn ambient(mut self) -> Namespace {
        self.metadata
            .labels
            .insert(DATAPLANE_MODE_LABEL.into(), MODE_AMBIENT.into());
        self
    }

    pub fn label(mut self, k: &str, v: &str) -> Namespace {
        self.metadata.labels.insert(k.into(), v.into());
        self
    }
}

pub fn workload(namespace: &str, name: &str) -> Workload {
    Workload {
        api_version: "ferrymesh.io/v1alpha1".into(),
        kind: "Workload".into(),
        metadata: meta(Some(namespace), name),
        spec: WorkloadSpec {
            node: String::new(),
            service_account: "default".into(),
            addresses: Vec::new(),
            netns: None,
        },
    }
}

impl Workload {
    pub fn node(mut self, n: &str) -> Workload {
        self.spec.node = n.into();
        self
    }
    pub fn addr(mut self, a: &str) -> Workload {
        self.spec.addresses.push(ip(a));
        self
    }
    pub fn label(mut self, k: &str, v: &str) -> Workload {
        self.metadata.labels.insert(k.into(), v.into());
        self
    }
    pub fn service_account(mut self, sa: &str) -> Workload {
        self.spec.service_account = sa.into();
        self
    }
}

pub fn service(namespace: &str, name: &str) -> Service {
    Service {
        api_version: "v1".into(),
        kind: "Service".into(),
        metadata: meta(Some(namespace), name),
        spec: ServiceSpec {
            cluster_ips: Vec::new(),
            selector: Labels::new(),
            ports: Vec::new(),
        },
    }
}

impl Service {
    pub fn vip(mut self, a: &str) -> Service {
        self.spec.cluster_ips.push(ip(a));
        self
    }
    pub fn select(mut self, k: &str, v: &str) -> Service {
        self.spec.selector.insert(k.into(), v.into());
        self
    }
    pub fn label(mut self, k: &str, v: &str) -> Service {
        self.metadata.labels.insert(k.into(), v.into());
        self
    }
    pub fn port(mut self, port: u16, target: u16) -> Service {
        self.spec.ports.push(ServicePort {
            name: None,
            port,
            target_port: Some(target),
            protocol: "TCP".into(),
            app_protocol: None,
        });
        self
    }
    /// Sets the last port's appProtocol.
    pub fn app_protocol(mut self, p: &str) -> Service {
        if let Some(last) = self.spec.ports.last_mut() {
            last.app_protocol = Some(p.into());
        }
        self
    }
}

/// An ALLOW policy with one rule; the methods below fill that rule.
pub fn policy(namespace: &str, name: &str) -> AuthorizationPolicy {
    AuthorizationPolicy {
        api_version: "security.istio.io/v1".into(),
        kind: "AuthorizationPolicy".into(),
        metadata: meta(Some(namespace), name),
        spec: AuthorizationPolicySpec {
            selector: None,
            action: Action::Allow,
            rules: vec![Rule::default()],
            ..AuthorizationPolicySpec::default()
        },
    }
}

impl AuthorizationPolicy {
    fn rule(&mut self) -> &mut Rule {
        if self.spec.rules.is_empty() {
            self.spec.rules.push(Rule::default());
        }
        let last = self.spec.rules.len() - 1;
        &mut self.spec.rules[last]
    }
    pub fn action(mut self, a: Action) -> Self {
        self.spec.action = a;
        self
    }
    pub fn select(mut self, k: &str, v: &str) -> Self {
        self.spec
            .selector
            .get_or_insert_with(LabelSelector::default)
            .match_labels
            .insert(k.into(), v.into());
        self
    }
    pub fn from_principal(mut self, p: &str) -> Self {
        let mut source = model::Source::default();
        source.principals.push(p.into());
        self.rule().from.push(From { source });
        self
    }
    pub fn to_port(mut self, port: u16) -> Self {
        let mut operation = Operation::default();
        operation.ports.push(port.to_string());
        self.rule().to.push(To { operation });
        self
    }
    pub fn to_method(mut self, m: &str) -> Self {
        let mut operation = Operation::default();
        operation.methods.push(m.into());
        self.rule().to.push(To { operation });
        self
    }
}

/// Objects for a test, added with `.with(...)`.
pub fn config() -> Objects {
    Objects::default()
}

impl Objects {
    pub fn with(mut self, o: impl Into<Object>) -> Objects {
        self.push(o.into());
        self
    }

    /// Compiled, as the data path sees it.
    pub fn state(self) -> State {
        State::compile(1, Arc::new(self), None).unwrap_or_else(|e| panic!("{e:?}"))
    }
}

macro_rules! into_object {
    ($($ty:ident),*) => {$(
        impl std::convert::From<$ty> for Object {
            fn from(x: $ty) -> Object {
                Object::$ty(Arc::new(x))
            }
        }
    )*};
}

into_object!(
    Namespace,
    Node,
    Workload,
    Service,
    AuthorizationPolicy,
    PeerAuthentication,
    HttpRoute,
    GrpcRoute,
    TrafficPolicy,
    DirectResponse,
    RequestAuthentication
);

/// Objects from YAML text, for the kinds that have no builder (routes...).
pub fn yaml(text: &str) -> Objects {
    crate::config::parse("test", text).unwrap_or_else(|e| panic!("{e}"))
}

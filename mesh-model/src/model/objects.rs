//! The set of objects a config holds, by kind. One table (`kinds!`) names every kind
//! once: its `Kind` variant, its field in `Objects`, its type and whether it is
//! namespaced; everything that walks all kinds is generated from it.
use std::{fmt, str::FromStr, sync::Arc};

use serde::{de::DeserializeOwned, Serialize};

use super::{core::*, gateway::*, meta::ObjectMeta, security::*, traffic::*};

/// (kind, namespace, name); the namespace is empty for cluster-scoped kinds.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown kind {0:?}; expected one of {list}", list = Kind::ALL.map(Kind::as_str).join(", "))]
pub struct UnknownKind(pub String);

macro_rules! kinds {
    ($( $variant:ident, $field:ident, $ty:ty, $name:literal, $namespaced:literal; )*) => {
        /// Every kind the mesh understands.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Kind { $( $variant, )* }

        impl Kind {
            pub const ALL: [Kind; [$( $name, )*].len()] = [$( Kind::$variant, )*];

            /// The name `kind:` has in YAML.
            pub fn as_str(self) -> &'static str {
                match self { $( Kind::$variant => $name, )* }
            }

            /// Namespace and Node are cluster-scoped.
            pub fn namespaced(self) -> bool {
                match self { $( Kind::$variant => $namespaced, )* }
            }
        }

        impl FromStr for Kind {
            type Err = UnknownKind;
            fn from_str(s: &str) -> Result<Kind, UnknownKind> {
                match s {
                    $( $name => Ok(Kind::$variant), )*
                    _ => Err(UnknownKind(s.to_owned())),
                }
            }
        }

        /// One object of any kind.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Object { $( $variant(Arc<$ty>), )* }

        impl Object {
            pub fn kind(&self) -> Kind {
                match self { $( Object::$variant(_) => Kind::$variant, )* }
            }

            pub fn metadata(&self) -> &ObjectMeta {
                match self { $( Object::$variant(o) => &o.metadata, )* }
            }

            /// The object as JSON (the wire form of config distribution).
            pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
                match self { $( Object::$variant(o) => serde_json::to_vec(o.as_ref()), )* }
            }

            /// Decodes one object of `kind` with `decode` (YAML or JSON), wrapped.
            pub fn decode<E>(
                kind: Kind,
                decode: impl Decoder<E>,
            ) -> Result<Object, E> {
                Ok(match kind { $( Kind::$variant => Object::$variant(Arc::new(decode.decode::<$ty>()?)), )* })
            }
        }

        /// Everything one config holds, by kind, in the order it was read.
        #[derive(Debug, Clone, Default, PartialEq, Serialize)]
        pub struct Objects { $( pub $field: Vec<Arc<$ty>>, )* }

        impl Objects {
            pub fn push(&mut self, o: Object) {
                match o { $( Object::$variant(x) => self.$field.push(x), )* }
            }

            /// Adds another file's objects.
            pub fn extend(&mut self, o: Objects) {
                $( self.$field.extend(o.$field); )*
            }

            /// Every object, kind by kind.
            pub fn iter(&self) -> impl Iterator<Item = Object> + '_ {
                std::iter::empty()
                    $( .chain(self.$field.iter().cloned().map(Object::$variant)) )*
            }

            /// The kinds whose objects differ between two sets (by pointer first,
            /// then by value): what a recompile must redo.
            pub fn changed_kinds(&self, other: &Objects) -> Vec<Kind> {
                let mut out = Vec::new();
                $(
                    if !same(&self.$field, &other.$field) {
                        out.push(Kind::$variant);
                    }
                )*
                out
            }
        }
    };
}

kinds! {
    Node, nodes, Node, "Node", false;
    Namespace, namespaces, Namespace, "Namespace", false;
    Workload, workloads, Workload, "Workload", true;
    Service, services, Service, "Service", true;
    AuthorizationPolicy, authorization_policies, AuthorizationPolicy, "AuthorizationPolicy", true;
    PeerAuthentication, peer_authentications, PeerAuthentication, "PeerAuthentication", true;
    HttpRoute, http_routes, HttpRoute, "HTTPRoute", true;
    GrpcRoute, grpc_routes, GrpcRoute, "GRPCRoute", true;
    TrafficPolicy, traffic_policies, TrafficPolicy, "TrafficPolicy", true;
    DirectResponse, direct_responses, DirectResponse, "DirectResponse", true;
    RequestAuthentication, request_authentications, RequestAuthentication, "RequestAuthentication", true;
    ReferenceGrant, reference_grants, ReferenceGrant, "ReferenceGrant", true;
    MeshConfig, mesh_configs, MeshConfig, "MeshConfig", false;
}

impl Objects {
    /// The mesh's root namespace: the MeshConfig's, else Istio's default.
    pub fn root_namespace(&self) -> &str {
        self.mesh_configs
            .first()
            .map_or(DEFAULT_ROOT_NAMESPACE, |m| m.spec.root_namespace.as_str())
    }
}

fn same<T: PartialEq>(a: &[Arc<T>], b: &[Arc<T>]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| Arc::ptr_eq(x, y) || x == y)
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something that can decode one object of a type chosen by its kind.
pub trait Decoder<E> {
    fn decode<T: DeserializeOwned>(self) -> Result<T, E>;
}

impl Object {
    pub fn key(&self) -> Key {
        let m = self.metadata();
        Key {
            kind: self.kind(),
            namespace: if self.kind().namespaced() {
                m.namespace().to_owned()
            } else {
                String::new()
            },
            name: m.name.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_their_names() {
        for k in Kind::ALL {
            assert_eq!(k.as_str().parse::<Kind>(), Ok(k));
        }
        let e = "Servise".parse::<Kind>().expect_err("unknown");
        assert!(
            e.to_string().contains("Service, AuthorizationPolicy"),
            "{e}"
        );
    }
}

//! `apiVersion` and `kind` of every object: one of a handful of values, so known
//! ones are kept as static strings instead of two allocations per object.
use std::{borrow::Cow, fmt, ops::Deref};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

const KNOWN: [&str; 15] = [
    "v1",
    "ferrymesh.io/v1alpha1",
    "security.istio.io/v1",
    "gateway.networking.k8s.io/v1",
    "Node",
    "Namespace",
    "Workload",
    "Service",
    "AuthorizationPolicy",
    "PeerAuthentication",
    "HTTPRoute",
    "GRPCRoute",
    "TrafficPolicy",
    "DirectResponse",
    "RequestAuthentication",
];

/// A string that is usually one of `KNOWN`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Interned(Cow<'static, str>);

impl Interned {
    pub fn new(s: &str) -> Interned {
        match KNOWN.iter().find(|k| **k == s) {
            Some(k) => Interned(Cow::Borrowed(k)),
            None => Interned(Cow::Owned(s.to_owned())),
        }
    }
}

impl Deref for Interned {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Interned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Interned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for Interned {
    fn from(s: &str) -> Interned {
        Interned::new(s)
    }
}

impl From<String> for Interned {
    fn from(s: String) -> Interned {
        Interned::new(&s)
    }
}

impl PartialEq<str> for Interned {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for Interned {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl Serialize for Interned {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Interned {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Interned, D::Error> {
        let s: Cow<'de, str> = Deserialize::deserialize(d)?;
        Ok(Interned::new(&s))
    }
}

impl schemars::JsonSchema for Interned {
    fn schema_name() -> Cow<'static, str> {
        "String".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        String::json_schema(g)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values_are_static_others_kept() {
        let v: Interned = serde_json::from_str("\"Workload\"").expect("json");
        assert!(matches!(v.0, Cow::Borrowed(_)));
        let other: Interned = serde_json::from_str("\"example.com/v9\"").expect("json");
        assert_eq!(&*other, "example.com/v9");
        assert_eq!(serde_json::to_string(&v).expect("json"), "\"Workload\"");
    }
}

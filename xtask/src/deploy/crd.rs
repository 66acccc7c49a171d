//! The CRDs of ferrymesh's own and Istio's kinds, their OpenAPI schemas generated
//! from the Rust types the agents parse (schemars), made structural.
use anyhow::Result;
use schemars::{generate::SchemaSettings, JsonSchema};
use serde_json::{json, Value};

/// Kubernetes structural schemas: no $schema/$defs/defaults, no
/// `additionalProperties: false`, only formats the API server knows.
fn structural(v: &mut Value) {
    if let Value::Object(m) = v {
        for k in [
            "$schema",
            "$defs",
            "definitions",
            "default",
            "title",
            "examples",
        ] {
            m.remove(k);
        }
        if m.get("additionalProperties") == Some(&Value::Bool(false)) {
            m.remove("additionalProperties");
        }
        if let Some(f) = m.get("format").and_then(Value::as_str) {
            if !matches!(f, "int32" | "int64" | "double" | "float") {
                m.remove("format");
            }
        }
        for (_, x) in m.iter_mut() {
            structural(x);
        }
    } else if let Value::Array(a) = v {
        a.iter_mut().for_each(structural);
    }
}

fn spec_schema<T: JsonSchema>() -> Value {
    let mut settings = SchemaSettings::openapi3();
    settings.inline_subschemas = true;
    let mut v = settings
        .into_generator()
        .into_root_schema_for::<T>()
        .to_value();
    structural(&mut v);
    v
}

pub(super) struct Crd {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub spec: Value,
}

pub(super) fn crds() -> Vec<Crd> {
    use mesh_model::model::*;
    vec![
        Crd {
            group: "ferrymesh.io",
            version: "v1alpha1",
            kind: "TrafficPolicy",
            plural: "trafficpolicies",
            spec: spec_schema::<TrafficPolicySpec>(),
        },
        Crd {
            group: "ferrymesh.io",
            version: "v1alpha1",
            kind: "DirectResponse",
            plural: "directresponses",
            spec: spec_schema::<DirectResponseSpec>(),
        },
        Crd {
            group: "security.istio.io",
            version: "v1",
            kind: "AuthorizationPolicy",
            plural: "authorizationpolicies",
            spec: spec_schema::<AuthorizationPolicySpec>(),
        },
        Crd {
            group: "security.istio.io",
            version: "v1",
            kind: "PeerAuthentication",
            plural: "peerauthentications",
            spec: spec_schema::<PeerAuthenticationSpec>(),
        },
        Crd {
            group: "security.istio.io",
            version: "v1",
            kind: "RequestAuthentication",
            plural: "requestauthentications",
            spec: spec_schema::<RequestAuthenticationSpec>(),
        },
    ]
}

pub(super) fn crd_yaml(c: &Crd) -> Result<String> {
    let singular = c.kind.to_ascii_lowercase();
    let doc = json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{}.{}", c.plural, c.group),
                     "labels": {"app.kubernetes.io/part-of": "ferrymesh"}},
        "spec": {
            "group": c.group,
            "scope": "Namespaced",
            "names": {"kind": c.kind, "listKind": format!("{}List", c.kind), "plural": c.plural, "singular": singular},
            "versions": [{
                "name": c.version, "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "required": ["spec"],
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "metadata": {"type": "object"},
                        "spec": c.spec,
                    }
                }}
            }]
        }
    });
    Ok(format!(
        "# Generated from the Rust model (mesh-model/src/model) by `cargo xtask deploy-check --write`.\n{}",
        serde_yaml::to_string(&doc)?
    ))
}

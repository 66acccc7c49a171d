//! `cargo xtask deploy-check`: renders the Helm chart offline and validates every
//! manifest; `--write` regenerates the CRDs from the Rust model first.
//!
//! - CRDs: their OpenAPI schemas are generated from the same Rust types the agents
//!   parse (schemars), so a field the code accepts is a field the API server accepts.
//!   Without `--write` a CRD that differs from the model fails the check.
//! - The chart's templates use only `{{ .Values.x.y }}`, `{{ .Release.Namespace }}`
//!   and `{{ .Chart.AppVersion }}`, so they render here without helm; anything else
//!   is reported.
//! - Every rendered document: parses, has apiVersion/kind/metadata.name, namespaced
//!   kinds have a namespace, workloads' selectors match their pod labels and
//!   containers have images, the DaemonSet surges, and RBAC grants list/watch on
//!   every kind the control plane watches.
//!
//! The rendered chart is written to target/deploy/ferrymesh.yaml (kubectl apply -f).
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};
use schemars::{generate::SchemaSettings, JsonSchema};
use serde_json::{json, Value};

use mesh_model::model::{ApiKind, CUSTOM_KINDS};

use crate::sh::{step, workspace_root};

const RELEASE_NAMESPACE: &str = "ferrymesh-system";

fn chart_dir() -> PathBuf {
    workspace_root().join("deploy/chart/ferrymesh")
}

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

struct Crd {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    spec: Value,
}

fn crds() -> Vec<Crd> {
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

fn crd_yaml(c: &Crd) -> Result<String> {
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
        "# Generated from the Rust model (mesh-agent/src/model) by `cargo xtask deploy-check --write`.\n{}",
        serde_yaml::to_string(&doc)?
    ))
}

fn lookup<'a>(values: &'a serde_yaml::Value, path: &str) -> Option<&'a serde_yaml::Value> {
    path.split('.').try_fold(values, |v, k| v.get(k))
}

/// Renders one template with the chart's values.
pub fn render(text: &str, values: &serde_yaml::Value, app_version: &str) -> Result<String, String> {
    let re = regex::Regex::new(r"\{\{-?\s*(.*?)\s*-?\}\}").map_err(|e| e.to_string())?;
    let mut errors = Vec::new();
    let out = re.replace_all(text, |c: &regex::Captures<'_>| {
        let expr = &c[1];
        if expr == ".Release.Namespace" {
            return RELEASE_NAMESPACE.to_owned();
        }
        if expr == ".Chart.AppVersion" {
            return app_version.to_owned();
        }
        let Some(path) = expr.strip_prefix(".Values.") else {
            errors.push(format!("{{{{ {expr} }}}} is not a plain substitution"));
            return String::new();
        };
        match lookup(values, path) {
            Some(serde_yaml::Value::String(s)) => s.clone(),
            Some(serde_yaml::Value::Number(n)) => n.to_string(),
            Some(serde_yaml::Value::Bool(b)) => b.to_string(),
            _ => {
                errors.push(format!(".Values.{path} is missing or not a scalar"));
                String::new()
            }
        }
    });
    if errors.is_empty() {
        Ok(out.into_owned())
    } else {
        Err(errors.join("; "))
    }
}

const NAMESPACED: [&str; 8] = [
    "ServiceAccount",
    "Deployment",
    "DaemonSet",
    "Service",
    "PodDisruptionBudget",
    "ConfigMap",
    "Secret",
    "Role",
];
const CLUSTER: [&str; 4] = [
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
];

fn check_doc(doc: &Value, rbac: &mut BTreeSet<(String, String)>) -> Vec<String> {
    let mut p = Vec::new();
    let kind = doc["kind"].as_str().unwrap_or("");
    let name = doc["metadata"]["name"].as_str().unwrap_or("");
    let what = format!("{kind} {name}");
    if doc["apiVersion"].as_str().is_none() || kind.is_empty() || name.is_empty() {
        p.push(format!(
            "{what}: apiVersion, kind and metadata.name are required"
        ));
    }
    if NAMESPACED.contains(&kind) && doc["metadata"]["namespace"].as_str().is_none() {
        p.push(format!(
            "{what}: namespaced kind without metadata.namespace"
        ));
    }
    if !NAMESPACED.contains(&kind) && !CLUSTER.contains(&kind) {
        p.push(format!("{what}: unexpected kind"));
    }
    if matches!(kind, "Deployment" | "DaemonSet") {
        let sel = doc["spec"]["selector"]["matchLabels"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let labels = &doc["spec"]["template"]["metadata"]["labels"];
        if sel.is_empty() || sel.iter().any(|(k, v)| &labels[k] != v) {
            p.push(format!(
                "{what}: spec.selector.matchLabels must match the pod template's labels"
            ));
        }
        for c in doc["spec"]["template"]["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if c["image"].as_str().is_none_or(|i| !i.contains(':')) {
                p.push(format!(
                    "{what}: container {} needs an image with a tag",
                    c["name"]
                ));
            }
        }
        if kind == "DaemonSet"
            && doc["spec"]["updateStrategy"]["rollingUpdate"]["maxSurge"].is_null()
        {
            p.push(format!("{what}: set updateStrategy.rollingUpdate.maxSurge so the new agent starts before the old one stops"));
        }
    }
    if kind == "ClusterRole" && name == "ferrymesh-control" {
        for r in doc["rules"].as_array().into_iter().flatten() {
            let verbs: Vec<&str> = r["verbs"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            if !(verbs.contains(&"list") && verbs.contains(&"watch")) {
                continue;
            }
            for g in r["apiGroups"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                for res in r["resources"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                {
                    rbac.insert((g.to_owned(), res.to_owned()));
                }
            }
        }
    }
    if kind == "CustomResourceDefinition" {
        let s = serde_json::to_string(doc).unwrap_or_default();
        if s.contains("\"$ref\"") {
            p.push(format!(
                "{what}: $ref in a schema (CRD schemas must be structural)"
            ));
        }
        for v in doc["spec"]["versions"].as_array().into_iter().flatten() {
            if v["schema"]["openAPIV3Schema"]["type"] != "object" {
                p.push(format!(
                    "{what}: version {} has no openAPIV3Schema",
                    v["name"]
                ));
            }
        }
    }
    p
}

pub fn run(write: bool) -> Result<()> {
    let chart = chart_dir();
    let crd_dir = chart.join("crds");
    step(&format!(
        "CRDs from the Rust model ({})",
        if write { "writing" } else { "checking" }
    ));
    std::fs::create_dir_all(&crd_dir)?;
    let mut problems = Vec::new();
    for c in crds() {
        let path = crd_dir.join(format!("{}.{}.yaml", c.plural, c.group));
        let want = crd_yaml(&c)?;
        if write {
            std::fs::write(&path, &want)?;
        } else if std::fs::read_to_string(&path).ok().as_deref() != Some(want.as_str()) {
            problems.push(format!(
                "{} differs from the model; run `cargo xtask deploy-check --write`",
                path.display()
            ));
        }
    }
    step("rendering the Helm chart with values.yaml (plain substitutions only)");
    let values: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(chart.join("values.yaml"))?)?;
    let meta: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(chart.join("Chart.yaml"))?)?;
    let app_version = meta["appVersion"]
        .as_str()
        .context("Chart.yaml: appVersion")?
        .to_owned();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&crd_dir)?
        .chain(std::fs::read_dir(chart.join("templates"))?)
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    let mut rendered = String::new();
    let mut docs = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f)?;
        let out = match render(&text, &values, &app_version) {
            Ok(o) => o,
            Err(e) => {
                problems.push(format!("{}: {e}", rel(f)));
                continue;
            }
        };
        for (i, d) in serde_yaml::Deserializer::from_str(&out).enumerate() {
            match <serde_yaml::Value as serde::Deserialize>::deserialize(d) {
                Ok(serde_yaml::Value::Null) => {}
                Ok(v) => docs.push((rel(f), serde_json::to_value(&v)?)),
                Err(e) => problems.push(format!("{} document {i}: {e}", rel(f))),
            }
        }
        rendered.push_str(&format!("# Source: {}\n{}\n---\n", rel(f), out.trim_end()));
    }
    let mut rbac = BTreeSet::new();
    for (file, d) in &docs {
        for p in check_doc(d, &mut rbac) {
            problems.push(format!("{file}: {p}"));
        }
    }
    step("RBAC covers every kind the control plane watches");
    let mut watched: Vec<(String, String)> = vec![
        ("".into(), "namespaces".into()),
        ("".into(), "pods".into()),
        ("".into(), "services".into()),
        ("discovery.k8s.io".into(), "endpointslices".into()),
    ];
    watched.extend(
        CUSTOM_KINDS
            .iter()
            .map(|k| (k.group.to_string(), k.plural.to_string())),
    );
    for w in watched {
        if !rbac.contains(&w) {
            problems.push(format!(
                "ClusterRole ferrymesh-control: no list/watch on {}/{}",
                w.0, w.1
            ));
        }
    }
    let crd_kinds: BTreeSet<String> = docs
        .iter()
        .filter(|(_, d)| d["kind"] == "CustomResourceDefinition")
        .map(|(_, d)| d["spec"]["names"]["kind"].as_str().unwrap_or("").to_owned())
        .collect();
    for ApiKind {
        group: g, kind: k, ..
    } in CUSTOM_KINDS
    {
        if g != "gateway.networking.k8s.io" && !crd_kinds.contains(k) {
            problems.push(format!(
                "no CRD for {k} ({g}), which the control plane watches"
            ));
        }
    }
    let out = workspace_root().join("target/deploy/ferrymesh.yaml");
    std::fs::create_dir_all(out.parent().context("path")?)?;
    std::fs::write(&out, &rendered)?;
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("  {p}");
        }
        bail!("{} problem(s) in deploy/", problems.len());
    }
    println!(
        "    {} documents from {} files valid; rendered to {}",
        docs.len(),
        files.len(),
        out.display()
    );
    Ok(())
}

fn rel(p: &Path) -> String {
    p.strip_prefix(workspace_root())
        .unwrap_or(p)
        .display()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_refuses_what_it_cannot_render() {
        let values: serde_yaml::Value = serde_yaml::from_str("a: {b: 3, s: x}").expect("yaml");
        assert_eq!(
            render(
                "n: {{ .Values.a.b }} {{ .Release.Namespace }}",
                &values,
                "1"
            )
            .as_deref(),
            Ok("n: 3 ferrymesh-system")
        );
        assert!(render("{{ include \"x\" . }}", &values, "1").is_err());
        assert!(render("{{ .Values.a.missing }}", &values, "1").is_err());
        assert!(
            render("{{ .Values.a }}", &values, "1").is_err(),
            "maps are not scalars"
        );
    }

    #[test]
    fn crd_schemas_are_structural() {
        for c in crds() {
            let s = serde_json::to_string(&c.spec).expect("json");
            assert!(
                !s.contains("$ref") && !s.contains("\"default\""),
                "{}: {s}",
                c.kind
            );
            assert_eq!(c.spec["type"], "object", "{}", c.kind);
        }
    }
}

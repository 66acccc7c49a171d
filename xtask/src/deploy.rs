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
use serde_json::Value;

use crate::sh::{step, workspace_root};

mod crd;
mod docs;

use crd::{crd_yaml, crds};

const RELEASE_NAMESPACE: &str = "ferrymesh-system";

fn chart_dir() -> PathBuf {
    workspace_root().join("deploy/chart/ferrymesh")
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

pub fn run(write: bool) -> Result<()> {
    let chart = chart_dir();
    let mut problems = sync_crds(&chart.join("crds"), write)?;
    step("rendering the Helm chart with values.yaml (plain substitutions only)");
    let rendered = render_chart(&chart)?;
    problems.extend(rendered.problems);
    let mut rbac = BTreeSet::new();
    for (file, d) in &rendered.docs {
        for p in docs::check_doc(d, &mut rbac) {
            problems.push(format!("{file}: {p}"));
        }
    }
    step("RBAC covers every kind the control plane watches");
    problems.extend(docs::check_watches(&rbac, &rendered.docs));
    let out = workspace_root().join("target/deploy/ferrymesh.yaml");
    std::fs::create_dir_all(out.parent().context("path")?)?;
    std::fs::write(&out, &rendered.text)?;
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("  {p}");
        }
        bail!("{} problem(s) in deploy/", problems.len());
    }
    println!(
        "    {} documents from {} files valid; rendered to {}",
        rendered.docs.len(),
        rendered.files,
        out.display()
    );
    Ok(())
}

/// Writes the CRDs from the model, or (checking) reports those that differ.
fn sync_crds(crd_dir: &Path, write: bool) -> Result<Vec<String>> {
    step(&format!(
        "CRDs from the Rust model ({})",
        if write { "writing" } else { "checking" }
    ));
    std::fs::create_dir_all(crd_dir)?;
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
    Ok(problems)
}

/// The chart rendered: one text for kubectl, its documents by file, and what
/// could not be rendered or parsed.
struct Rendered {
    text: String,
    docs: Vec<(String, Value)>,
    files: usize,
    problems: Vec<String>,
}

fn render_chart(chart: &Path) -> Result<Rendered> {
    let values: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(chart.join("values.yaml"))?)?;
    let meta: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(chart.join("Chart.yaml"))?)?;
    let app_version = meta["appVersion"]
        .as_str()
        .context("Chart.yaml: appVersion")?
        .to_owned();
    let mut files: Vec<PathBuf> = std::fs::read_dir(chart.join("crds"))?
        .chain(std::fs::read_dir(chart.join("templates"))?)
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    let mut r = Rendered {
        text: String::new(),
        docs: Vec::new(),
        files: files.len(),
        problems: Vec::new(),
    };
    for f in &files {
        let out = match render(&std::fs::read_to_string(f)?, &values, &app_version) {
            Ok(o) => o,
            Err(e) => {
                r.problems.push(format!("{}: {e}", rel(f)));
                continue;
            }
        };
        for (i, d) in serde_yaml::Deserializer::from_str(&out).enumerate() {
            match <serde_yaml::Value as serde::Deserialize>::deserialize(d) {
                Ok(serde_yaml::Value::Null) => {}
                Ok(v) => r.docs.push((rel(f), serde_json::to_value(&v)?)),
                Err(e) => r.problems.push(format!("{} document {i}: {e}", rel(f))),
            }
        }
        r.text
            .push_str(&format!("# Source: {}\n{}\n---\n", rel(f), out.trim_end()));
    }
    Ok(r)
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

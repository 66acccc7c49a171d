//! The conformance table (`conformance`), in file mode: each case's YAML
//! parsed and compiled as an agent or mesh-control's directory source does.
use crate::{config, conformance};

#[test]
fn istio_verdicts_in_file_mode() {
    let cases = conformance::cases();
    let mut failures = Vec::new();
    let mut checks = 0;
    for c in &cases {
        let objects = config::parse("case.yaml", &c.yaml).map_err(|e| e.to_string());
        failures.extend(conformance::case::check(c, objects, false));
        checks += c.checks.len();
    }
    assert!(
        failures.is_empty(),
        "{} of {checks} verdicts disagree with Istio:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        cases.len() >= 60 && checks >= 120,
        "{} cases, {checks} verdicts",
        cases.len()
    );
}

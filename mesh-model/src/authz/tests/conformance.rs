//! The conformance table (`testing::authz_cases`), in file mode: each case's YAML
//! parsed and compiled as an agent or mesh-control's directory source does.
use crate::{config, testing};

#[test]
fn istio_verdicts_in_file_mode() {
    let cases = testing::authz_conformance_cases();
    let mut failures = Vec::new();
    let mut checks = 0;
    for c in &cases {
        let objects = config::parse("case.yaml", &c.yaml).map_err(|e| e.to_string());
        failures.extend(testing::authz_cases::check(c, objects, false));
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

//! What the bench scenarios share: the L4 lab, switching the mesh on and off,
//! medians, verdicts.
use std::time::Duration;

use anyhow::Result;
use ferrymesh_tests::{Lab, LabSpec, PodSpec};

/// Labels (or unlabels) the bench namespace and waits until both agents have
/// enrolled (or released) its pods.
pub(crate) fn set_meshed(lab: &mut Lab, meshed: bool) -> Result<()> {
    lab.set_meshed("bench", meshed)?;
    for n in ["a", "b"] {
        lab.wait_stats(n, "enrolment to settle", |s| {
            s["enrolled"]
                .as_array()
                .is_some_and(|a| a.is_empty() != meshed)
        })?;
    }
    // Settling, not synchronisation: the previous mode's connections close
    // before the next one is measured.
    std::thread::sleep(Duration::from_millis(300));
    Ok(())
}

/// The median (the upper one of an even count); 0 for none.
pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

pub(crate) fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

/// The L4 bench's lab (also the peer-tool part's): client and local on a, remote
/// on b, namespace `bench` unlabelled.
pub(crate) fn spec() -> LabSpec {
    LabSpec {
        nodes: vec!["a".into(), "b".into()],
        namespaces: vec![("bench".into(), false)],
        pods: vec![
            PodSpec::new("client", "bench", "a"),
            PodSpec::new("local", "bench", "a"),
            PodSpec::new("remote", "bench", "b"),
        ],
        services: vec![],
        agent_args: vec![],
        local_ca: false,
    }
}

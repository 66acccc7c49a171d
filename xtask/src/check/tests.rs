use serde_json::{json, Value};

use super::*;

/// A package: (name, build-dependencies).
fn package(name: &str, build_deps: &[&str]) -> Value {
    let deps: Vec<Value> = build_deps
        .iter()
        .map(|d| json!({"name": d, "kind": "build"}))
        .collect();
    json!({"id": format!("{name} 0.1.0"), "name": name, "dependencies": deps})
}

/// An edge of the resolve graph: (from, to, kind) with kind None for normal.
fn metadata(packages: &[Value], edges: &[(&str, &str, Option<&str>)]) -> Value {
    let nodes: Vec<Value> = packages
        .iter()
        .map(|p| {
            let name = p["name"].as_str().unwrap_or_default();
            let deps: Vec<Value> = edges
                .iter()
                .filter(|(from, _, _)| *from == name)
                .map(|(_, to, kind)| {
                    json!({"pkg": format!("{to} 0.1.0"), "dep_kinds": [{"kind": kind}]})
                })
                .collect();
            json!({"id": p["id"], "deps": deps})
        })
        .collect();
    json!({"packages": packages, "resolve": {"nodes": nodes}})
}

struct Case {
    name: &'static str,
    edges: &'static [(&'static str, &'static str, Option<&'static str>)],
    expect: &'static [&'static str],
}

#[test]
fn kernel_free_packages_reach_no_ebpf_build() {
    let packages = [
        package("xtask", &[]),
        package("ferrymesh-tests", &["protox"]),
        package("mesh-model", &["protox"]),
        package("mesh-infra", &[]),
        package("mesh-control", &[]),
        package("mesh-agent", &["aya-build"]),
        package("aya", &[]),
        package("protox", &[]),
    ];
    let cases = [
        Case {
            name: "today's layout",
            edges: &[
                ("xtask", "ferrymesh-tests", None),
                ("xtask", "mesh-model", None),
                ("mesh-control", "mesh-model", None),
                ("mesh-model", "protox", Some("build")),
                ("mesh-agent", "mesh-model", None),
                ("mesh-agent", "aya", None),
            ],
            expect: &[],
        },
        Case {
            name: "xtask through tests to the agent",
            edges: &[
                ("xtask", "ferrymesh-tests", None),
                ("ferrymesh-tests", "mesh-agent", None),
            ],
            expect: &["xtask -> ferrymesh-tests -> mesh-agent: its build script builds eBPF"],
        },
        Case {
            name: "a build dependency counts",
            edges: &[("xtask", "mesh-agent", Some("build"))],
            expect: &["xtask -> mesh-agent"],
        },
        Case {
            name: "a dev dependency does not",
            edges: &[("xtask", "mesh-agent", Some("dev"))],
            expect: &[],
        },
        Case {
            name: "the control plane may not use aya",
            edges: &[("mesh-control", "aya", None)],
            expect: &["mesh-control -> aya: aya needs the kernel toolchain"],
        },
    ];
    for case in cases {
        let problems = graph_problems(&metadata(&packages, case.edges)).expect(case.name);
        assert_eq!(
            problems.len(),
            case.expect.len(),
            "{}: {problems:?}",
            case.name
        );
        for (p, want) in problems.iter().zip(case.expect) {
            assert!(p.contains(want), "{}: {p:?} lacks {want:?}", case.name);
        }
    }
}

fn readme(rows: &[&str]) -> String {
    let mut s = format!("# x\n{README_START}\n| what | why |\n| --- | --- |\n");
    for r in rows {
        s.push_str(&format!("| `{r}` | because |\n"));
    }
    s.push_str(README_END);
    s.push_str("\n| `not-in-the-table` | |\n");
    s
}

#[test]
fn the_readme_lists_what_the_bootstrap_installs() {
    let all = bootstrap::prerequisites();
    assert!(list_problems(&readme(&all)).expect("readme").is_empty());

    let missing = list_problems(&readme(&all[1..])).expect("readme");
    assert_eq!(missing.len(), 1, "{missing:?}");
    assert!(missing[0].contains(all[0]), "{missing:?}");

    let mut more = all.clone();
    more.push("cowsay");
    let extra = list_problems(&readme(&more)).expect("readme");
    assert_eq!(extra.len(), 1, "{extra:?}");
    assert!(extra[0].contains("lists cowsay"), "{extra:?}");

    assert!(list_problems("no markers").is_err());
}

#[test]
fn this_readme_agrees_with_the_bootstrap() {
    let text = std::fs::read_to_string(sh::workspace_root().join("README.md")).expect("README");
    assert_eq!(list_problems(&text).expect("table"), Vec::<String>::new());
}

//! No import cycles between modules: every `use` and every `crate::`/`super::`/child
//! path of a crate's non-test code is an edge from the module it is written in to
//! the module it names; a strongly connected component of more than one module is a
//! cycle, reported with its members. The crate root is never a target: it declares
//! every module.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};
use syn::visit::Visit;

/// A module path inside one crate: `["tunnel", "hbone"]`; the crate root is empty.
type Module = Vec<String>;

/// Module -> the modules it names.
pub type Graph = BTreeMap<Module, BTreeSet<Module>>;

/// The crates whose modules must form a DAG.
pub const CRATES: [&str; 6] = [
    "mesh-agent",
    "mesh-model",
    "mesh-control",
    "mesh-infra",
    "tests",
    "xtask",
];

pub fn run(root: &Path) -> Result<()> {
    let mut problems = Vec::new();
    for c in CRATES {
        let graph = graph(&root.join(c).join("src"))?;
        for cycle in cycles(&graph) {
            let names: Vec<String> = cycle.iter().map(show).collect();
            problems.push(format!("{c}: {}", names.join(" <-> ")));
        }
    }
    if !problems.is_empty() {
        bail!(
            "import cycles between modules (move what both need into a module both import):\n  {}",
            problems.join("\n  ")
        );
    }
    println!(
        "    no import cycles between modules in {}",
        CRATES.join(", ")
    );
    Ok(())
}

fn show(m: &Module) -> String {
    if m.is_empty() {
        "<crate root>".into()
    } else {
        m.join("::")
    }
}

/// Every module file under `src` (not `tests.rs` files, not `src/bin`), by module path.
fn modules(src: &Path) -> Result<BTreeMap<Module, PathBuf>> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let p = e?.path();
            let rel = p.strip_prefix(src).unwrap_or(&p);
            if rel.starts_with("bin") {
                continue;
            }
            if p.is_dir() {
                dirs.push(p);
                continue;
            }
            if p.extension().is_none_or(|x| x != "rs") || p.file_stem() == Some("tests".as_ref()) {
                continue;
            }
            let mut m: Module = rel
                .with_extension("")
                .iter()
                .map(|s| s.to_string_lossy().into_owned())
                .collect();
            if m == ["lib"] || m == ["main"] {
                m.clear();
            }
            out.insert(m, p);
        }
    }
    Ok(out)
}

pub fn graph(src: &Path) -> Result<Graph> {
    let mods = modules(src)?;
    let known: BTreeSet<Module> = mods.keys().cloned().collect();
    let mut g = Graph::new();
    for (m, file) in &mods {
        let text = std::fs::read_to_string(file)?;
        let ast = syn::parse_file(&text).with_context(|| format!("parsing {}", file.display()))?;
        let mut c = Collector {
            here: m,
            known: &known,
            names: BTreeSet::new(),
        };
        c.visit_file(&ast);
        c.names.remove(m);
        g.insert(m.clone(), c.names);
    }
    Ok(g)
}

struct Collector<'a> {
    here: &'a Module,
    known: &'a BTreeSet<Module>,
    names: BTreeSet<Module>,
}

impl Collector<'_> {
    /// The module a path names: resolved from `crate`, `super`, `self` or a child
    /// of this module, to the longest prefix that is a module.
    fn add(&mut self, segments: &[String]) {
        let Some(first) = segments.first() else {
            return;
        };
        let (mut base, rest): (Module, &[String]) = match first.as_str() {
            "crate" => (Vec::new(), &segments[1..]),
            "super" => {
                let mut b = self.here.clone();
                b.pop();
                (b, &segments[1..])
            }
            "self" => (self.here.clone(), &segments[1..]),
            _ => (self.here.clone(), segments),
        };
        let start = base.len();
        base.extend(rest.iter().cloned());
        for end in (start..=base.len()).rev() {
            let candidate = &base[..end];
            if end > start && self.known.contains(candidate) {
                self.names.insert(candidate.to_vec());
                return;
            }
        }
        // `super::x` naming an item of the parent itself. The crate root declares
        // every module, so naming its items is not counted.
        if first == "super" && start > 0 && self.known.contains(&base[..start]) {
            self.names.insert(base[..start].to_vec());
        }
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, t: &syn::UseTree) {
        match t {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => self.leaf(prefix, &n.ident),
            syn::UseTree::Rename(r) => self.leaf(prefix, &r.ident),
            syn::UseTree::Glob(_) => self.add(prefix),
            syn::UseTree::Group(g) => g.items.iter().for_each(|i| self.use_tree(prefix, i)),
        }
    }

    fn leaf(&mut self, prefix: &[String], ident: &syn::Ident) {
        let mut full = prefix.to_vec();
        if ident != "self" {
            full.push(ident.to_string());
        }
        self.add(&full);
    }
}

fn is_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg")
            && a.parse_args::<syn::Meta>()
                .is_ok_and(|m| m.path().is_ident("test"))
    })
}

impl<'ast> Visit<'ast> for Collector<'_> {
    fn visit_item(&mut self, i: &'ast syn::Item) {
        let attrs = match i {
            syn::Item::Mod(m) => &m.attrs,
            syn::Item::Fn(f) => &f.attrs,
            syn::Item::Use(u) => &u.attrs,
            syn::Item::Impl(x) => &x.attrs,
            _ => return syn::visit::visit_item(self, i),
        };
        if !is_test(attrs) {
            syn::visit::visit_item(self, i);
        }
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        self.use_tree(&mut Vec::new(), &u.tree);
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        if p.segments.len() > 1 {
            let segs: Vec<String> = p.segments.iter().map(|s| s.ident.to_string()).collect();
            self.add(&segs);
        }
        syn::visit::visit_path(self, p);
    }

    /// Macro bodies are tokens: `crate :: a :: b` inside them counts too.
    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        let tokens: Vec<String> = m
            .tokens
            .to_string()
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        for (i, t) in tokens.iter().enumerate() {
            if t != "crate" && t != "super" {
                continue;
            }
            let mut segs = vec![t.clone()];
            let mut j = i + 1;
            while tokens.get(j).is_some_and(|s| s == "::") {
                match tokens.get(j + 1) {
                    Some(s) if s.chars().all(|c| c.is_alphanumeric() || c == '_') => {
                        segs.push(s.clone())
                    }
                    _ => break,
                }
                j += 2;
            }
            self.add(&segs);
        }
        syn::visit::visit_macro(self, m);
    }
}

/// Strongly connected components with more than one module (Tarjan).
pub fn cycles(g: &Graph) -> Vec<Vec<Module>> {
    struct Tarjan<'g> {
        g: &'g Graph,
        index: BTreeMap<&'g Module, usize>,
        low: BTreeMap<&'g Module, usize>,
        stack: Vec<&'g Module>,
        on: BTreeSet<&'g Module>,
        out: Vec<Vec<Module>>,
    }
    impl<'g> Tarjan<'g> {
        fn visit(&mut self, v: &'g Module) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            self.on.insert(v);
            for w in self.g.get(v).into_iter().flatten() {
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(lw);
                } else if self.on.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut comp = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on.remove(w);
                    comp.push(w.clone());
                    if w == v {
                        break;
                    }
                }
                if comp.len() > 1 {
                    comp.sort();
                    self.out.push(comp);
                }
            }
        }
    }
    let mut t = Tarjan {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in g.keys() {
        if !t.index.contains_key(v) {
            t.visit(v);
        }
    }
    t.out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crate_of(files: &[(&str, &str)]) -> tempdir::Dir {
        let d = tempdir::Dir::new();
        for (path, text) in files {
            let p = d.0.join(path);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, text).expect("write");
        }
        d
    }

    mod tempdir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                let p = std::env::temp_dir().join(format!(
                    "xtask-cycles-{}-{}",
                    std::process::id(),
                    fastrand_suffix()
                ));
                std::fs::create_dir_all(&p).expect("mkdir");
                Dir(p)
            }
        }
        fn fastrand_suffix() -> u128 {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    fn names(c: &[Vec<Module>]) -> Vec<Vec<String>> {
        c.iter()
            .map(|comp| comp.iter().map(|m| m.join("::")).collect())
            .collect()
    }

    #[test]
    fn cycles_through_use_paths_super_and_macros_are_found() {
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a [&'a [&'a str]]);
        let cases: [Case; 5] = [
            (
                "use both ways",
                &[
                    ("lib.rs", "mod a; mod b;"),
                    ("a.rs", "use crate::b::X;"),
                    ("b.rs", "use crate::a::{self, Y};"),
                ],
                &[&["a", "b"]],
            ),
            (
                "a path in an expression and one in a macro",
                &[
                    ("lib.rs", "mod a; mod b;"),
                    ("a.rs", "fn f() { crate::b::g(); }"),
                    ("b.rs", "fn g() { tracing::info!(x = ?crate::a::X); }"),
                ],
                &[&["a", "b"]],
            ),
            (
                "a child naming its parent, which names the child",
                &[
                    ("lib.rs", "mod p;"),
                    (
                        "p.rs",
                        "mod c; pub use c::Thing; fn f() -> Thing { c::make() }",
                    ),
                    ("p/c.rs", "use super::Other;"),
                ],
                &[&["p", "p::c"]],
            ),
            (
                "a DAG",
                &[
                    ("lib.rs", "mod a; mod b; mod c;"),
                    ("a.rs", "use crate::{b::X, c::Y};"),
                    ("b.rs", "use crate::c::Z;"),
                    ("c.rs", "use std::fmt;"),
                ],
                &[],
            ),
            (
                "test code does not count",
                &[
                    ("lib.rs", "mod a; mod b;"),
                    ("a.rs", "use crate::b::X;"),
                    ("b.rs", "#[cfg(test)] mod tests { use crate::a::Y; }"),
                ],
                &[],
            ),
        ];
        for (name, files, want) in cases {
            let d = crate_of(files);
            let g = graph(&d.0).expect("graph");
            let want: Vec<Vec<String>> = want
                .iter()
                .map(|c| c.iter().map(|s| s.to_string()).collect())
                .collect();
            assert_eq!(names(&cycles(&g)), want, "{name}: {g:?}");
        }
    }

    #[test]
    fn this_workspace_has_no_import_cycles() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("workspace");
        run(root).expect("no cycles");
    }
}

//! The shape docs/architecture.md promises, checked on the source: no
//! import cycle between the top-level modules of a crate, dependencies that
//! point one way between crates, no benchmark code in the product.
//!
//! An arrow A → B is a `crate::B` path in module A (unit-test modules
//! excepted); a cycle is a strongly connected set of two or more modules.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace")
        .to_owned()
}

/// The crate's top-level modules and the `.rs` files of each.
fn modules(src: &Path) -> BTreeMap<String, Vec<PathBuf>> {
    let mut modules = BTreeMap::new();
    for entry in fs::read_dir(src).expect("source folder") {
        let path = entry.expect("entry").path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            modules.insert(name, rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") && name != "lib" && name != "main" {
            modules.insert(name, vec![path]);
        }
    }
    modules
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).expect("module folder") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// The text without `#[cfg(test)] mod … { … }` blocks and line comments.
fn product_code(text: &str) -> String {
    let mut text = text.to_owned();
    while let Some(start) = text.find("#[cfg(test)]\nmod ") {
        let Some(open) = text[start..].find('{').map(|i| start + i) else {
            break;
        };
        let mut depth = 0usize;
        let mut end = text.len();
        for (i, c) in text[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        text.replace_range(start..end, "");
    }
    text.lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The names a `crate::{a, b::c}` group or a `crate::a` path reaches.
fn arrows(code: &str, names: &BTreeSet<String>) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        let targets: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            group
                .split(',')
                .map(|part| part.trim().split("::").next().unwrap_or_default())
                .collect()
        } else {
            vec![
                rest.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .next()
                    .unwrap_or_default(),
            ]
        };
        found.extend(
            targets
                .into_iter()
                .filter(|t| names.contains(*t))
                .map(str::to_owned),
        );
    }
    found
}

fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let modules = modules(src);
    let names: BTreeSet<String> = modules.keys().cloned().collect();
    modules
        .iter()
        .map(|(name, files)| {
            let mut to = BTreeSet::new();
            for file in files {
                let code = product_code(&fs::read_to_string(file).expect("readable source"));
                to.extend(arrows(&code, &names));
            }
            to.remove(name);
            (name.clone(), to)
        })
        .collect()
}

/// Every module set that reaches itself (Tarjan's strongly connected components).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct Walk<'g> {
        graph: &'g BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        found: Vec<Vec<String>>,
    }
    impl<'g> Walk<'g> {
        fn visit(&mut self, v: &'g str) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in &self.graph[v] {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.on_stack.contains(w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    component.push(w.to_owned());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.found.push(component);
                }
            }
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !walk.index.contains_key(v.as_str()) {
            walk.visit(v);
        }
    }
    walk.found
}

#[test]
fn the_cycle_finder_finds_a_cycle() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec!["a"]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
    .collect();
    assert_eq!(cycles(&graph), vec![vec!["a", "b", "c"]]);
    let names = ["x", "y"].map(str::to_owned).into_iter().collect();
    assert_eq!(
        arrows("use crate::{x::One, y};\nlet z = crate::x::f();", &names),
        names
    );
}

#[test]
fn no_crate_has_an_import_cycle_between_its_top_level_modules() {
    let root = workspace();
    let mut found = Vec::new();
    for src in [
        "gateway/src",
        "catalog/src",
        "policies/src",
        "protocol/src",
        "payload/src",
        "adapters/src",
        "bench/src",
        "sdk/rust/src",
    ] {
        for cycle in cycles(&graph(&root.join(src))) {
            found.push(format!("{src}: {}", cycle.join(" ↔ ")));
        }
    }
    assert!(found.is_empty(), "import cycles:\n{}", found.join("\n"));
}

#[test]
fn inside_the_gateway_entry_points_sit_above_the_path_and_the_path_above_dispatch() {
    let graph = graph(&workspace().join("gateway/src"));
    // Nothing but the composition root and the CLI reaches the server.
    for (module, to) in &graph {
        if to.contains("server") {
            assert!(
                ["cli"].contains(&module.as_str()),
                "{module} imports server"
            );
        }
    }
    // Dispatch and the path never reach back up to an entry point.
    for lower in ["invocation", "workers", "builtins", "access", "identity"] {
        for entry in ["mcp", "admin", "worker", "server", "cli"] {
            assert!(
                !graph[lower].contains(entry),
                "{lower} imports the entry point {entry}"
            );
        }
    }
    assert!(
        !graph["workers"].contains("invocation"),
        "worker dispatch must not import the invocation path"
    );
}

/// The catalog and adapters never learn the worker protocol, and the
/// payload type beneath them all knows none of them.
#[test]
fn crates_depend_one_way() {
    let root = workspace();
    let normal = |krate: &str| {
        let manifest = fs::read_to_string(root.join(krate).join("Cargo.toml")).unwrap();
        manifest
            .split("[dev-dependencies]")
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    for (krate, forbidden) in [
        (
            "catalog",
            &["capgate-protocol", "capgate-adapters", "capgate-gateway"][..],
        ),
        ("adapters", &["capgate-protocol", "capgate-gateway"][..]),
        ("payload", &["capgate-"][..]),
        (
            "protocol",
            &["capgate-catalog", "capgate-adapters", "capgate-gateway"][..],
        ),
    ] {
        let deps = normal(krate);
        for name in forbidden {
            let found = deps
                .lines()
                .filter(|line| !line.starts_with("name") && !line.starts_with("description"))
                .any(|line| line.contains(name));
            assert!(!found, "{krate} depends on {name}");
        }
    }
}

#[test]
fn adapters_never_import_the_gateway_and_the_product_holds_no_benchmark() {
    let root = workspace();
    for file in rust_files(&root.join("adapters/src")) {
        let code = fs::read_to_string(&file).expect("readable source");
        assert!(
            !code.contains("capgate_gateway"),
            "{} imports the gateway",
            file.display()
        );
    }
    let manifest = fs::read_to_string(root.join("adapters/Cargo.toml")).unwrap();
    assert!(!manifest.contains("capgate-gateway"));
    for file in rust_files(&root.join("gateway/src")) {
        let name = file.file_name().unwrap().to_string_lossy();
        assert!(
            !name.starts_with("bench"),
            "benchmark code in {}",
            file.display()
        );
    }
    let gateway = fs::read_to_string(root.join("gateway/Cargo.toml")).unwrap();
    let normal = gateway
        .split("[dev-dependencies]")
        .next()
        .unwrap_or_default();
    for dependency in ["capgate-sdk", "tempfile"] {
        assert!(
            !normal.contains(dependency),
            "the gateway's normal dependencies include {dependency}"
        );
    }
    assert!(
        root.join("adapters/src/functions_available.rs").is_file(),
        "the functions-available trigger lives in adapters"
    );
}

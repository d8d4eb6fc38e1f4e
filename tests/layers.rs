//! The layer test: saga-core's modules import only from their own floor or
//! the floors below, and no two modules import each other, however
//! indirectly.
//!
//! It parses every `saga-core/src/**/*.rs` file with `syn`, collects each
//! `crate::` path (in `use` items, types, expressions, patterns and macro
//! bodies; `super::` resolved to the module it names; a name re-exported at
//! the crate root resolved through `lib.rs`'s `pub use` list), and maps the
//! first module of each path to its floor in [`FLOORS`]. A path from a
//! module to one on a higher floor is an upward edge; modules that reach
//! each other form a cycle. A module missing from the table fails too, so a
//! new module gets its floor decided here.
//!
//! A unit is a top-level module of the crate (a file, or a folder with its
//! files): `store/sqlite.rs` naming `super::Lease` is the store naming
//! itself.
//!
//! `planted_upward_path_and_cycle_are_reported` runs the same checker on a
//! small fake source tree (`tests/layers/fixture/src`) with an upward path
//! and a cycle planted in it, and asserts the exact report.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use syn::visit::{self, Visit};

/// The floors, lowest first, and the modules on each. STYLE.md's order
/// (definitions, execution, durability, distribution, tools) with two
/// floors below the definitions, and two modules moved down from
/// execution, because of what the definitions' own signatures name:
///
/// - `vocabulary`: the leaves everything names (ids, the lifecycle
///   statuses and kinds, escaping user text, `redact`, the stored values
///   left out of a decoder's message), `gate`, the way a durable
///   run's sync steps leave their worker thread, which the journal trait
///   hands the executor, and `json`, the encoding of logged contexts.
///   They import nothing.
/// - `log vocabulary`: `journal`, the events, the journal trait, the resume
///   state and `StoreError`. Below both the executor and the stores (as
///   steno keeps `saga_log.rs`), and below the definitions as well:
///   `SagaError::Store` (in `error`) carries a `StoreError`.
/// - `definitions`: what a user writes and what a run returns. `report` and
///   `error` are here, not in execution, because `Saga::run`'s result and
///   `StepError` are named by the definitions (`error` holds both
///   `StepError` and `SagaError`, which carries a `SagaReport`).
///   `observer` is here because a definition holds its observers
///   (`SagaBuilder::observer`). `diagram` renders a definition's shape;
///   `__private` is what the macros' expansions build definitions with.
/// - `execution`: the executor and what it alone uses (logging, spans, the
///   blocking driver), and `logged`, the logged form of its errors and
///   outcomes that the engine reads back.
/// - `durability`: the engine and the stores.
/// - `distribution`: the worker.
/// - `tools`: the test kit, and `guide` (the design, macro and operations
///   guides as doc modules: no code, and free to link anywhere).
const FLOORS: &[(&str, &[&str])] = &[
    (
        "vocabulary",
        &["id", "name", "status", "escape", "redact", "gate", "json"],
    ),
    ("log vocabulary", &["journal"]),
    (
        "definitions",
        &[
            "error",
            "report",
            "policy",
            "step",
            "clock",
            "cancel",
            "context",
            "observer",
            "saga",
            "diagram",
            "__private",
        ],
    ),
    (
        "execution",
        &["executor", "logged", "logging", "spans", "blocking"],
    ),
    ("durability", &["engine", "store"]),
    ("distribution", &["worker"]),
    ("tools", &["testkit", "guide"]),
];

#[test]
fn saga_core_layers_hold() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("saga-core/src");
    let report = check(&src);
    assert!(
        report.is_empty(),
        "saga-core/src breaks its layers:\n{}",
        report.join("\n")
    );
}

#[test]
fn planted_upward_path_and_cycle_are_reported() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/layers/fixture/src");
    assert_eq!(
        check(&src),
        vec![
            "step.rs: `crate::engine::SagaEngine` goes up from `step` (definitions) to `engine` (durability)"
                .to_owned(),
            // The planted path makes a cycle too: the engine names the step.
            "cycle: `engine` -> `step` -> `engine`".to_owned(),
            "cycle: `policy` -> `step` -> `policy`".to_owned(),
        ]
    );
}

#[test]
fn every_module_needs_a_floor() {
    let dir = std::env::temp_dir().join(format!("saga-layers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("lib.rs"), "mod id;\nmod gadget;\n").unwrap();
    std::fs::write(dir.join("id.rs"), "pub struct Id;\n").unwrap();
    std::fs::write(dir.join("gadget.rs"), "use crate::id::Id;\n").unwrap();
    let report = check(&dir);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(
        report,
        vec!["`gadget` has no floor: add it to the table in tests/layers.rs".to_owned()]
    );
}

/// Everything wrong with the layers of the crate whose sources are in
/// `src`: upward paths (each with its file and path), modules without a
/// floor, and cycles (each once, from its first module in name order).
fn check(src: &Path) -> Vec<String> {
    let floor_of: BTreeMap<&str, usize> = FLOORS
        .iter()
        .enumerate()
        .flat_map(|(floor, (_, modules))| modules.iter().map(move |m| (*m, floor)))
        .collect();
    let crate_src = Crate::read(src);
    let mut report = Vec::new();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut unplaced = BTreeSet::new();
    for reference in &crate_src.references {
        let (from, to) = (&reference.from, &reference.to);
        for module in [from, to] {
            if !floor_of.contains_key(module.as_str()) {
                unplaced.insert(module.clone());
            }
        }
        if from == to {
            continue;
        }
        graph.entry(from.clone()).or_default().insert(to.clone());
        let upward = match (floor_of.get(from.as_str()), floor_of.get(to.as_str())) {
            (Some(&a), Some(&b)) if b > a => Some((a, b)),
            _ => None,
        };
        if let Some((a, b)) = upward {
            report.push(format!(
                "{}: `{}` goes up from `{from}` ({}) to `{to}` ({})",
                reference.file, reference.path, FLOORS[a].0, FLOORS[b].0
            ));
        }
    }
    for module in crate_src.modules.iter().chain(&unplaced) {
        if !floor_of.contains_key(module.as_str()) {
            let line = format!("`{module}` has no floor: add it to the table in tests/layers.rs");
            if !report.contains(&line) {
                report.push(line);
            }
        }
    }
    report.extend(cycles(&graph));
    report
}

/// Each cycle of `graph` once, as `a -> b -> a` from its least module.
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut found = BTreeSet::new();
    for start in graph.keys() {
        // Depth-first from `start`, through modules after it in name order
        // only: each cycle is found from its least module, once.
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        while let Some((node, path)) = stack.pop() {
            for next in graph.get(&node).into_iter().flatten() {
                if next == start {
                    let mut line = String::from("cycle: ");
                    for module in &path {
                        let _ = write!(line, "`{module}` -> ");
                    }
                    let _ = write!(line, "`{start}`");
                    found.insert(line);
                } else if next > start && !path.contains(next) {
                    let mut longer = path.clone();
                    longer.push(next.clone());
                    stack.push((next.clone(), longer));
                }
            }
        }
    }
    found.into_iter().collect()
}

/// One `crate::` path in the sources.
struct Reference {
    /// The file it is in, relative to `src`.
    file: String,
    /// The path as written (`super::` resolved), e.g. `crate::store::Event`.
    path: String,
    /// The top-level module of the file.
    from: String,
    /// The top-level module the path names.
    to: String,
}

/// What the checker reads of a crate.
struct Crate {
    /// Every top-level module (from the file names).
    modules: BTreeSet<String>,
    references: Vec<Reference>,
}

impl Crate {
    fn read(src: &Path) -> Self {
        let lib = parse(&src.join("lib.rs"));
        // `#[path = "private.rs"] pub mod __private;`: a file's module name.
        let mut renamed = BTreeMap::new();
        // The crate's top-level modules, as `lib.rs` declares them.
        let mut declared = BTreeSet::new();
        // `pub use error::SagaError;`: a root name's module.
        let mut root_names = BTreeMap::new();
        for item in &lib.items {
            match item {
                syn::Item::Mod(module) => {
                    declared.insert(module.ident.to_string());
                    for attr in &module.attrs {
                        let file = match &attr.meta {
                            syn::Meta::NameValue(nv) if nv.path.is_ident("path") => {
                                match &nv.value {
                                    syn::Expr::Lit(syn::ExprLit {
                                        lit: syn::Lit::Str(file),
                                        ..
                                    }) => Some(file),
                                    _ => None,
                                }
                            }
                            _ => None,
                        };
                        if let Some(file) = file {
                            let stem = file.value().trim_end_matches(".rs").to_owned();
                            renamed.insert(stem, module.ident.to_string());
                        }
                    }
                }
                syn::Item::Use(item) => root_uses(&item.tree, &mut root_names),
                _ => {}
            }
        }
        let mut files = Vec::new();
        rust_files(src, &mut files);
        files.sort();
        let mut modules = BTreeSet::new();
        let mut references = Vec::new();
        for file in files {
            let relative = file.strip_prefix(src).unwrap_or(&file);
            let mut module: Vec<String> = relative
                .with_extension("")
                .iter()
                .map(|s| s.to_string_lossy().into_owned())
                .collect();
            if module
                .last()
                .is_some_and(|last| last == "mod" || last == "lib")
            {
                module.pop();
            }
            let name = module.first().and_then(|first| renamed.get(first.as_str()));
            if let Some(name) = name.cloned() {
                module[0] = name;
            }
            let Some(top) = module.first().cloned() else {
                // lib.rs: its `mod` and `pub use` lists are the crate's
                // outline, not a layer.
                continue;
            };
            modules.insert(top.clone());
            let mut collector = Collector {
                module: module.clone(),
                paths: Vec::new(),
            };
            collector.visit_file(&parse(&file));
            for segments in collector.paths {
                let Some(first) = segments.first() else {
                    continue;
                };
                // `crate::SagaError`: the module `lib.rs` re-exports it from.
                let to = match root_names.get(first) {
                    Some(module) if !declared.contains(first) => module.clone(),
                    _ => first.clone(),
                };
                references.push(Reference {
                    file: relative.to_string_lossy().replace('\\', "/"),
                    path: format!("crate::{}", segments.join("::")),
                    from: top.clone(),
                    to,
                });
            }
        }
        Crate {
            modules,
            references,
        }
    }
}

fn parse(file: &Path) -> syn::File {
    let text = std::fs::read_to_string(file)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
    syn::parse_file(&text).unwrap_or_else(|e| panic!("cannot parse {}: {e}", file.display()))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The names `lib.rs` re-exports, with the module each comes from.
fn root_uses(tree: &syn::UseTree, out: &mut BTreeMap<String, String>) {
    match tree {
        syn::UseTree::Path(path) => {
            let module = path.ident.to_string();
            let mut names = BTreeMap::new();
            root_uses(&path.tree, &mut names);
            for name in names.into_keys() {
                out.insert(name, module.clone());
            }
        }
        syn::UseTree::Name(name) => {
            out.insert(name.ident.to_string(), String::new());
        }
        syn::UseTree::Rename(rename) => {
            out.insert(rename.rename.to_string(), String::new());
        }
        syn::UseTree::Group(group) => {
            for tree in &group.items {
                root_uses(tree, out);
            }
        }
        syn::UseTree::Glob(_) => {}
    }
}

/// Collects the crate-absolute paths of one file: each as its segments
/// after `crate`.
struct Collector {
    /// The module being read (the file's, plus any inline `mod`).
    module: Vec<String>,
    paths: Vec<Vec<String>>,
}

impl Collector {
    /// The crate-absolute segments of a path starting with `first`, or
    /// `None` for a path that does not start at `crate` or `super`.
    fn absolute(&self, segments: &[String]) -> Option<Vec<String>> {
        match segments.first().map(String::as_str) {
            Some("crate") => Some(segments[1..].to_vec()),
            Some("super") => {
                let mut base = self.module.clone();
                let mut rest = segments;
                while rest.first().is_some_and(|s| s == "super") {
                    base.pop();
                    rest = &rest[1..];
                }
                base.extend(rest.iter().cloned());
                Some(base)
            }
            _ => None,
        }
    }

    fn record(&mut self, segments: &[String]) {
        if let Some(path) = self.absolute(segments).filter(|p| !p.is_empty()) {
            self.paths.push(path);
        }
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(path) => {
                prefix.push(path.ident.to_string());
                self.use_tree(prefix, &path.tree);
                prefix.pop();
            }
            syn::UseTree::Name(name) => {
                let mut full = prefix.clone();
                if name.ident != "self" {
                    full.push(name.ident.to_string());
                }
                self.record(&full);
            }
            syn::UseTree::Rename(rename) => {
                let mut full = prefix.clone();
                if rename.ident != "self" {
                    full.push(rename.ident.to_string());
                }
                self.record(&full);
            }
            syn::UseTree::Glob(_) => {
                let full = prefix.clone();
                self.record(&full);
            }
            syn::UseTree::Group(group) => {
                for tree in &group.items {
                    self.use_tree(prefix, tree);
                }
            }
        }
    }
}

impl<'ast> Visit<'ast> for Collector {
    fn visit_item_mod(&mut self, module: &'ast syn::ItemMod) {
        self.module.push(module.ident.to_string());
        visit::visit_item_mod(self, module);
        self.module.pop();
    }

    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        self.use_tree(&mut Vec::new(), &item.tree);
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
        self.record(&segments);
        visit::visit_path(self, path);
    }

    /// Macro bodies are tokens to `syn`: their `crate::a::b` and
    /// `super::a` paths are found in the token text.
    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        let text = mac.tokens.to_string();
        let words: Vec<&str> = text.split_whitespace().collect();
        let mut i = 0;
        while i < words.len() {
            if matches!(words[i], "crate" | "super") {
                let mut segments = vec![words[i].to_owned()];
                let mut j = i + 1;
                while j + 1 < words.len() && words[j] == "::" && is_ident(words[j + 1]) {
                    segments.push(words[j + 1].to_owned());
                    j += 2;
                }
                if segments.len() > 1 {
                    self.record(&segments);
                }
                i = j;
            } else {
                i += 1;
            }
        }
        visit::visit_macro(self, mac);
    }
}

fn is_ident(word: &str) -> bool {
    word.chars().all(|c| c == '_' || c.is_alphanumeric())
}

//! The house as designed, asserted over the source tree (in the spirit of rust-analyzer's
//! `tidy.rs`): the layering rules over `crate::`/`super::` paths, no import cycle between
//! files, a `//!` doc on every module, no source file over [`MAX_LINES`] lines before its
//! tests, and no `TODO` without a reason. ARCHITECTURE.md states the same rules in prose.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Longest a source file may be, counting the lines before its `#[cfg(test)]` module: a file
/// longer than this holds more than one job (split it by job, as `server/mutations/` is).
const MAX_LINES: usize = 800;

/// Which top-level modules each module may import (itself always allowed). Modules not listed
/// may import anything but `cli`.
const LAYERS: &[(&str, &[&str])] = &[
    ("engine", &[]),
    ("store", &["engine", "rules"]),
    ("rules", &["engine"]),
    ("config", &["engine", "rules"]),
    ("policy", &["engine", "config", "store", "rules"]),
    ("metrics", &["engine", "config", "store", "policy"]),
    // The fleet is server-side (tokio) but never the server's: the mutation service plugs in
    // through `fleet::follow::Sink`; proto stays at the edges.
    ("fleet", &["engine", "config", "store", "policy", "metrics"]),
    ("proto", &[]),
    ("client", &["engine", "proto"]),
    ("loadgen", &["engine", "proto", "client"]),
];

struct Source {
    /// Module path, e.g. `["server", "mutations", "requests"]`; `[]` for `lib.rs`.
    module: Vec<String>,
    text: String,
}

fn sources() -> Vec<(PathBuf, Source)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") || path.ends_with("main.rs") {
                continue;
            }
            let relative = path.strip_prefix(&root).unwrap();
            let mut module: Vec<String> = relative
                .with_extension("")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if module.last().is_some_and(|m| m == "mod") || module == ["lib"] {
                module.pop();
            }
            let text = std::fs::read_to_string(&path).unwrap();
            found.push((relative.to_owned(), Source { module, text }));
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

/// The code of a file before its test module, without comments (doc comments mention paths).
fn code_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .take_while(|line| !line.starts_with("#[cfg(test)]"))
        .map(|line| match line.find("//") {
            Some(at) if !line[..at].contains('"') => &line[..at],
            _ => line,
        })
}

/// Every module path a file names through `crate::…` or `super::…` (grouped imports expanded
/// one level: `use crate::{a::X, b::Y}` names `a` and `b`).
fn referenced_paths(source: &Source) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    for line in code_lines(&source.text) {
        let mut rest = line;
        while let Some(at) = rest
            .find("crate::")
            .into_iter()
            .chain(rest.find("super::"))
            .min()
        {
            let tail = &rest[at..];
            let (base, after) = if let Some(after) = tail.strip_prefix("crate::") {
                (Vec::new(), after)
            } else {
                let mut base = source.module.clone();
                let mut after = tail;
                // `super` of `a/b.rs` is `a`; of `a/b/mod.rs` it is also `a`.
                while let Some(next) = after.strip_prefix("super::") {
                    base.pop();
                    after = next;
                }
                (base, after)
            };
            let mut expanded = Vec::new();
            if let Some(group) = after.strip_prefix('{') {
                let inner = group.split('}').next().unwrap_or("");
                for item in inner.split(',') {
                    expanded.push(item.trim().to_owned());
                }
            } else {
                expanded.push(after.to_owned());
            }
            for item in expanded {
                let mut path = base.clone();
                for segment in item.split("::") {
                    let name: String = segment
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if name.is_empty() || name == "self" {
                        break;
                    }
                    let ends = segment.len() != name.len();
                    path.push(name);
                    if ends {
                        break;
                    }
                }
                paths.push(path);
            }
            rest = &tail[7..];
        }
    }
    paths
}

/// The file module a path lands in: its longest prefix that is a module of the crate.
fn resolve(path: &[String], modules: &BTreeSet<Vec<String>>) -> Vec<String> {
    (0..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|prefix| modules.contains(prefix))
        .unwrap_or_default()
}

fn name(module: &[String]) -> String {
    if module.is_empty() {
        "lib".into()
    } else {
        module.join("::")
    }
}

#[test]
fn layering_holds_and_no_file_imports_upward() {
    let sources = sources();
    let modules: BTreeSet<Vec<String>> = sources.iter().map(|(_, s)| s.module.clone()).collect();
    let mut violations = Vec::new();
    for (file, source) in &sources {
        let Some(own) = source.module.first() else {
            continue;
        };
        for path in referenced_paths(source) {
            let target = resolve(&path, &modules);
            let Some(top) = target.first() else {
                continue;
            };
            if top == own {
                continue;
            }
            let allowed = match LAYERS.iter().find(|(layer, _)| layer == own) {
                Some((_, allowed)) => allowed.contains(&top.as_str()),
                None => top != "cli",
            };
            if !allowed {
                violations.push(format!(
                    "{}: imports {} (a {own} module may not import {top})",
                    file.display(),
                    name(&target)
                ));
            }
        }
    }
    violations.sort();
    violations.dedup();
    assert!(
        violations.is_empty(),
        "upward imports:\n{}",
        violations.join("\n")
    );
}

#[test]
fn no_import_cycle_between_files() {
    let sources = sources();
    let modules: BTreeSet<Vec<String>> = sources.iter().map(|(_, s)| s.module.clone()).collect();
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (_, source) in &sources {
        let from = &source.module;
        for path in referenced_paths(source) {
            let to = resolve(&path, &modules);
            // A module and its own parent or child (`mod.rs` and the files it declares) are one
            // room; between them, references both ways are composition, not layering.
            let related = |a: &[String], b: &[String]| a.len() + 1 == b.len() && b.starts_with(a);
            if &to == from || to.is_empty() || related(from, &to) || related(&to, from) {
                continue;
            }
            edges.entry(from.clone()).or_default().insert(to);
        }
    }
    if let Some(cycle) = find_cycle(&edges) {
        panic!("import cycle: {}", cycle.join(" -> "));
    }
}

type Graph = BTreeMap<Vec<String>, BTreeSet<Vec<String>>>;

/// A cycle of `edges`, as module names from its first node back to it, if there is one.
fn find_cycle(edges: &Graph) -> Option<Vec<String>> {
    // Depth-first search; a grey node reached again closes a cycle.
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Grey,
        Black,
    }
    fn visit(
        node: &Vec<String>,
        edges: &Graph,
        marks: &mut BTreeMap<Vec<String>, Mark>,
        stack: &mut Vec<Vec<String>>,
    ) -> Option<Vec<String>> {
        marks.insert(node.clone(), Mark::Grey);
        stack.push(node.clone());
        for next in edges.get(node).into_iter().flatten() {
            match marks.get(next) {
                Some(Mark::Grey) => {
                    let start = stack.iter().position(|n| n == next).unwrap();
                    let mut cycle: Vec<String> = stack[start..].iter().map(|n| name(n)).collect();
                    cycle.push(name(next));
                    return Some(cycle);
                }
                Some(Mark::Black) => {}
                None => {
                    if let Some(cycle) = visit(next, edges, marks, stack) {
                        return Some(cycle);
                    }
                }
            }
        }
        stack.pop();
        marks.insert(node.clone(), Mark::Black);
        None
    }
    let mut marks = BTreeMap::new();
    for node in edges.keys() {
        if !marks.contains_key(node)
            && let Some(cycle) = visit(node, edges, &mut marks, &mut Vec::new())
        {
            return Some(cycle);
        }
    }
    None
}

#[test]
fn every_module_says_what_it_owns() {
    let undocumented: Vec<String> = sources()
        .iter()
        .filter(|(_, s)| {
            !s.text
                .lines()
                .find(|l| !l.trim().is_empty())
                .is_some_and(|l| l.starts_with("//!"))
        })
        .map(|(file, _)| file.display().to_string())
        .collect();
    assert!(
        undocumented.is_empty(),
        "modules without a `//!` doc: {undocumented:?}"
    );
}

#[test]
fn no_source_file_holds_more_than_one_room() {
    let long: Vec<String> = sources()
        .iter()
        .map(|(file, s)| (file, code_lines(&s.text).count()))
        .filter(|&(_, lines)| lines > MAX_LINES)
        .map(|(file, lines)| format!("{}: {lines} lines", file.display()))
        .collect();
    assert!(
        long.is_empty(),
        "files over {MAX_LINES} lines before their tests: {long:?}"
    );
}

#[test]
fn every_todo_gives_its_reason() {
    let bare: Vec<String> = sources()
        .iter()
        .flat_map(|(file, s)| {
            s.text.lines().enumerate().filter_map(move |(n, line)| {
                let at = line.find("TODO")?;
                // `TODO(reason): …` is fine; a bare TODO is a promise nobody can check.
                (!line[at + 4..].starts_with('(')).then(|| format!("{}:{}", file.display(), n + 1))
            })
        })
        .collect();
    assert!(bare.is_empty(), "TODO without a reason: {bare:?}");
}

#[test]
fn the_checker_sees_what_it_must() {
    // The rules above must be able to fail: a hand-made engine file importing the server is
    // caught, and so is a two-file cycle.
    let engine_file = Source {
        module: vec!["engine".into(), "set".into()],
        text: "use crate::server::state::State;\nuse super::{number::Number, keys};\n".into(),
    };
    let paths = referenced_paths(&engine_file);
    assert!(paths.contains(&vec!["server".to_string(), "state".into(), "State".into()]));
    assert!(paths.contains(&vec![
        "engine".to_string(),
        "number".into(),
        "Number".into()
    ]));
    assert!(paths.contains(&vec!["engine".to_string(), "keys".into()]));
    let modules: BTreeSet<Vec<String>> = [vec!["server".to_string(), "state".into()]]
        .into_iter()
        .collect();
    assert_eq!(
        resolve(&paths[0], &modules),
        vec!["server".to_string(), "state".into()]
    );
    let commented = Source {
        module: vec!["store".into()],
        text: "//! see crate::server\n// crate::cli\nfn f() {} // crate::server\n".into(),
    };
    assert!(referenced_paths(&commented).is_empty());
    // The cycle of wave 1: journal -> metrics -> server::state -> server::mutations -> journal.
    let module = |path: &str| path.split("::").map(String::from).collect::<Vec<_>>();
    let mut edges = Graph::new();
    for (from, to) in [
        ("journal", "metrics"),
        ("metrics", "server::state"),
        ("server::state", "server::mutations"),
        ("server::mutations", "journal"),
        ("server::mutations", "engine::set"),
    ] {
        edges.entry(module(from)).or_default().insert(module(to));
    }
    let cycle = find_cycle(&edges).expect("the cycle is found");
    assert_eq!(cycle.first(), cycle.last());
    assert_eq!(cycle.len(), 5, "{cycle:?}");
    edges
        .get_mut(&module("server::mutations"))
        .unwrap()
        .remove(&module("journal"));
    assert_eq!(find_cycle(&edges), None);
}

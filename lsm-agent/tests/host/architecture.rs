//! The flow runs one way (docs/architecture.md): a module of `lsm-agent/src` may import only
//! modules earlier in the flow, and the core imports no edge. This test reads the sources and
//! fails on any `crate::` path that breaks the table below, so the rule holds without review.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

/// Every top-level module with what it may import. Utilities (`listen`, `supervise`) import
/// nothing of ours and may be used by anyone. Keep in step with docs/architecture.md.
const ALLOWED: &[(&str, &[&str])] = &[
    ("listen", &[]),
    ("supervise", &[]),
    ("procfs", &[]),
    ("policy", &[]),
    ("bpf", &["policy", "procfs"]),
    ("agent", &["policy", "bpf", "procfs"]),
    ("dns", &["policy", "agent"]),
    ("k8s", &["policy", "agent", "events"]),
    ("events", &["policy", "procfs"]),
    ("tetragon", &["policy", "events"]),
    ("grpc", &["policy", "agent", "events", "tetragon", "listen"]),
    ("export", &["policy", "events", "tetragon"]),
    ("requests", &["policy", "events", "dns"]),
    ("metrics", &["policy", "agent", "dns", "events", "listen"]),
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("reading src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source without its `#[cfg(test)]` items: tests may reach anywhere.
fn without_tests(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.trim() == "#[cfg(test)]" {
            // Skip the next item: a `mod x;` line or a braced block.
            let mut depth = 0i32;
            let mut opened = false;
            for l in lines.by_ref() {
                depth += l.matches('{').count() as i32 - l.matches('}').count() as i32;
                opened |= l.contains('{');
                if (opened && depth <= 0) || (!opened && l.trim_end().ends_with(';')) {
                    break;
                }
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The top-level modules named by `crate::…` paths, including `use crate::{a::…, b, …}`.
fn imported_modules(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level names of the group: at brace depth 0, after `{` or `,`.
            let mut depth = 0;
            let mut start = true;
            let mut name = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if start && depth == 0 && (c.is_alphanumeric() || c == '_') => name.push(c),
                    _ if start && !name.is_empty() => {
                        found.insert(std::mem::take(&mut name));
                        start = false;
                    }
                    _ => {}
                }
            }
            if !name.is_empty() {
                found.insert(name);
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            found.insert(name);
        }
    }
    found
}

fn top_module(file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src()).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    match first {
        "lib.rs" | "bin" => None,
        f => Some(f.trim_end_matches(".rs").to_string()),
    }
}

#[test]
fn no_module_imports_one_later_in_the_flow() {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut violations = Vec::new();
    for file in files {
        let Some(module) = top_module(&file) else {
            continue;
        };
        let ok = allowed.get(module.as_str()).unwrap_or_else(|| {
            panic!("module {module} is not in the table of tests/host/architecture.rs and docs/architecture.md")
        });
        let text = fs::read_to_string(&file).expect("reading a source file");
        for dep in imported_modules(&without_tests(&text)) {
            if dep != module && allowed.contains_key(dep.as_str()) && !ok.contains(&dep.as_str()) {
                violations.push(format!("{} imports {dep}", file.display()));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "imports against the flow:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_import_reader_sees_grouped_and_plain_paths_and_skips_tests() {
    let text = "use crate::{agent::X, events::{bus::B, model}, listen};\nfn f() { crate::dns::run(); }\n#[cfg(test)]\nmod tests {\n    use crate::grpc::Y;\n}\n";
    let got = imported_modules(&without_tests(text));
    let want: BTreeSet<String> = ["agent", "events", "listen", "dns"]
        .map(String::from)
        .into();
    assert_eq!(got, want);
}

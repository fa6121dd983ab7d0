//! The module graph stays acyclic and layered (issue 26).
//!
//! Reads every `crate::<module>` (and, in the binary's files, `streamgate::<module>`) path in
//! `src/`, outside comments and `#[cfg(test)]` items, and checks each arrow between top-level
//! modules against [`LEVELS`]: a module may import only modules on a lower level, and never
//! what [`NEVER`] forbids. A new top-level module must be placed in the table.
//!
//! A component kind's configuration lives in its folder (`source/<kind>/spec.rs`,
//! `sink/<kind>/spec.rs`) but belongs to the spec layer: those files count as `spec`, and so do
//! paths into them (`crate::sink::kafka::spec::…`), so they too may import only what spec may.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every top-level module and its level, lowest first. Arrows point down only.
const LEVELS: &[(&str, u32)] = &[
    // Leaves: they import nothing of the crate.
    ("ack", 0),
    ("telemetry", 0),
    ("tls", 0),
    // The outbound HTTP client (its TLS from `tls`).
    ("http_client", 1),
    // Test and demo fixtures (mock model, embedded broker, generator): only `tls`, for a
    // model server behind HTTPS.
    ("testing", 1),
    // The unit of work (records and their receipt) and the configuration.
    ("batch", 1),
    ("spec", 1),
    // Bytes ↔ Arrow.
    ("codec", 2),
    // Client connections shared by a kind's source and sink.
    ("connect", 3),
    // Components.
    ("source", 4),
    ("transform", 4),
    ("inference", 4),
    ("sink", 4),
    // A pipeline compiled from its spec.
    ("plan", 5),
    // Running pipelines.
    ("runtime", 6),
    // Surfaces over the runtime.
    ("demo", 7),
    ("gateway", 8),
    ("backfill", 8),
    // The command line and the fuzzing entry points.
    ("cli", 9),
    ("fuzzing", 10),
    // The binary.
    ("commands", 11),
    ("alloc", 11),
    ("main", 12),
    // The crate root: declares the modules.
    ("lib", 13),
];

/// Arrows that must never exist, whatever the levels say, and why.
const NEVER: &[(&str, &str, &str)] = &[
    (
        "source",
        "sink",
        "a source hands batches to the runtime; it never writes",
    ),
    (
        "sink",
        "source",
        "a sink settles receipts; it never reads the source",
    ),
    (
        "codec",
        "source",
        "decoding is pure: no connector behind it",
    ),
    ("codec", "sink", "encoding is pure: no connector behind it"),
    (
        "inference",
        "source",
        "models see rows, not where they came from",
    ),
    ("inference", "sink", "models see rows, not where they go"),
    (
        "spec",
        "http_client",
        "configuration is pure: loading it does no I/O",
    ),
    (
        "spec",
        "connect",
        "configuration is pure: loading it does no I/O",
    ),
    (
        "spec",
        "inference",
        "configuration is pure: parsers live in spec",
    ),
    (
        "spec",
        "gateway",
        "configuration is pure: parsers live in spec",
    ),
    (
        "batch",
        "spec",
        "the unit of work depends on Arrow and its receipt only",
    ),
    ("ack", "batch", "receipts depend on nothing"),
    (
        "telemetry",
        "runtime",
        "telemetry is read by components, never the reverse",
    ),
];

/// Files of the binary (declared by `main.rs`), which see the library as `streamgate::`.
const BINARY_FILES: &[&str] = &["main", "commands", "alloc"];

#[test]
fn module_arrows_point_down_and_break_no_never_rule() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let levels: BTreeMap<&str, u32> = LEVELS.iter().copied().collect();
    let mut problems = Vec::new();
    let mut seen_modules = BTreeSet::new();
    for file in rust_files(&src) {
        let relative = file.strip_prefix(&src).unwrap();
        let module = top_module(relative);
        seen_modules.insert(module.clone());
        let Some(&level) = levels.get(module.as_str()) else {
            problems.push(format!(
                "{}: module `{module}` is not in LEVELS: place it in the layering",
                relative.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(&file).unwrap();
        let roots: &[&str] = if BINARY_FILES.contains(&module.as_str()) {
            &["crate", "streamgate"]
        } else {
            &["crate"]
        };
        for (line, target) in imports(&production_code(&text), roots) {
            if target == module || target == "self" {
                continue;
            }
            let Some(&target_level) = levels.get(target.as_str()) else {
                // Items at the crate root (none today) or a module spelled differently.
                problems.push(format!(
                    "{}:{line}: imports `{target}`, which is not in LEVELS",
                    relative.display()
                ));
                continue;
            };
            if let Some((_, _, why)) = NEVER
                .iter()
                .find(|(from, to, _)| *from == module && *to == target)
            {
                problems.push(format!(
                    "{}:{line}: {module} → {target} is never allowed: {why}",
                    relative.display()
                ));
            } else if target_level >= level {
                problems.push(format!(
                    "{}:{line}: {module} (level {level}) imports {target} (level {target_level}): \
                     arrows point to lower levels only",
                    relative.display()
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "module graph:\n  {}",
        problems.join("\n  ")
    );
    // The table names only modules that exist, so it stays a true map.
    let stale: Vec<_> = LEVELS
        .iter()
        .map(|(m, _)| *m)
        .filter(|m| !seen_modules.contains(*m))
        .collect();
    assert!(
        stale.is_empty(),
        "LEVELS names modules that no longer exist: {stale:?}"
    );
}

/// The check catches each of the five import sites that made the cycle before issue 26.
#[test]
fn the_former_cycle_sites_would_be_refused() {
    let levels: BTreeMap<&str, u32> = LEVELS.iter().copied().collect();
    for (from, to) in [
        ("spec", "gateway"),
        ("spec", "inference"),
        ("spec", "connect"),
        ("codec", "inference"),
    ] {
        let never = NEVER.iter().any(|(f, t, _)| *f == from && *t == to);
        assert!(
            never || levels[to] >= levels[from],
            "{from} → {to} would pass"
        );
    }
    // The scanner sees each form those sites used.
    let code = "use crate::connect::nats::{SubjectTemplate, check_subject};\n\
                fn f() { let c = crate::inference::protocol::transport::client(); }\n\
                use crate::{\n    gateway::auth,\n    spec::X,\n};\n\
                // crate::sink in a comment\n\
                #[cfg(test)]\nmod tests { use crate::source::X; fn g() { let s = \"}\"; } }\n\
                fn h() { crate::plan::compile(); }\n\
                use crate::sink::kafka::spec::KafkaSinkSpec;\n\
                use crate::sink::kafka::specimen;\n";
    let found: Vec<String> = imports(&production_code(code), &["crate"])
        .into_iter()
        .map(|(_, m)| m)
        .collect();
    assert_eq!(
        found,
        [
            "connect",
            "inference",
            "gateway",
            "spec",
            "plan",
            "spec",
            "sink"
        ]
    );
    // A kind's spec file is in the spec layer.
    assert_eq!(top_module(Path::new("sink/kafka/spec.rs")), "spec");
    assert_eq!(top_module(Path::new("sink/kafka/mod.rs")), "sink");
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// `codec` for `codec/json.rs` and `codec.rs`; `lib` for `lib.rs`; `spec` for a component
/// kind's `source/<kind>/spec.rs` or `sink/<kind>/spec.rs`.
fn top_module(relative: &Path) -> String {
    let parts: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if let [component, _kind, file] = parts.as_slice()
        && COMPONENTS.contains(&component.as_str())
        && file == "spec.rs"
    {
        return "spec".to_string();
    }
    parts[0].trim_end_matches(".rs").to_string()
}

/// Modules whose kinds keep their configuration in `<module>/<kind>/spec.rs`.
const COMPONENTS: &[&str] = &["source", "sink"];

/// The text with comments, string and char literals blanked (line breaks kept) and every
/// `#[cfg(test)]` item removed.
fn production_code(text: &str) -> String {
    let code = blank_comments_and_literals(text);
    let mut out = String::with_capacity(code.len());
    let mut rest = code.as_str();
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let item = &rest[at..];
        let end = item_end(item);
        // Keep the line count so reported line numbers stay right.
        out.extend(item[..end].chars().filter(|&c| c == '\n'));
        rest = &item[end..];
    }
    out.push_str(rest);
    out
}

/// Where the item starting at `text` ends: after its first `;` outside braces, or after the
/// brace that closes its first `{`.
fn item_end(text: &str) -> usize {
    let mut depth = 0usize;
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return i + 1;
                }
            }
            ';' if depth == 0 => return i + 1,
            _ => {}
        }
    }
    text.len()
}

/// Blanks comments and string/char literals so braces and paths inside them do not count.
fn blank_comments_and_literals(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if c == 'r'
            && (next == Some('"') || next == Some('#'))
            && !chars
                .get(i.wrapping_sub(1))
                .is_some_and(|p| p.is_alphanumeric() || *p == '_')
        {
            // Raw string: r"…", r#"…"#, …
            let mut j = i + 1;
            let mut hashes = 0;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                match chars.get(j) {
                    None => break,
                    Some('"') if (1..=hashes).all(|k| chars.get(j + k) == Some(&'#')) => {
                        j += 1 + hashes;
                        break;
                    }
                    _ => j += 1,
                }
            }
            out.extend(chars[i..j.min(chars.len())].iter().map(|&c| blank(c)));
            i = j;
        } else if c == '"' {
            let mut j = i + 1;
            while j < chars.len() && chars[j] != '"' {
                j += if chars[j] == '\\' { 2 } else { 1 };
            }
            let end = (j + 1).min(chars.len());
            out.extend(chars[i..end].iter().map(|&c| blank(c)));
            i = end;
        } else if c == '\'' {
            // A char literal ('x', '\n', '\u{..}'), or a lifetime ('a) left as it is.
            let close = if next == Some('\\') {
                (i + 2..chars.len().min(i + 12)).find(|&j| chars[j] == '\'')
            } else {
                (chars.get(i + 2) == Some(&'\'')).then_some(i + 2)
            };
            match close {
                Some(j) => {
                    out.extend(std::iter::repeat_n(' ', j + 1 - i));
                    i = j + 1;
                }
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// (line, module) of every `<root>::<module>` path and every module in `<root>::{a::…, b}`
/// (a group may span lines).
fn imports(code: &str, roots: &[&str]) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for root in roots {
        let pattern = format!("{root}::");
        let mut from = 0;
        while let Some(at) = code[from..].find(&pattern) {
            let start = from + at;
            from = start + pattern.len();
            let before = code[..start].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let line = code[..start].matches('\n').count() + 1;
            let rest = &code[from..];
            if let Some(group) = rest.strip_prefix('{') {
                found.extend(split_group(group).into_iter().map(|m| (line, m)));
            } else {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if name.is_empty() {
                    continue;
                }
                // `sink::kafka::spec…` is the spec layer.
                let segments: Vec<&str> = rest.split("::").take(3).collect();
                let is_kind_spec = COMPONENTS.contains(&name.as_str())
                    && segments.len() == 3
                    && segments[2].starts_with("spec")
                    && !segments[2]["spec".len()..]
                        .starts_with(|c: char| c.is_alphanumeric() || c == '_');
                found.push((line, if is_kind_spec { "spec".into() } else { name }));
            }
        }
    }
    found.sort();
    found
}

/// The first segment of each path in a `{a::x, b, c::{y, z}}` group (`group` starts after `{`).
fn split_group(group: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut depth = 0;
    let mut current = String::new();
    let mut at_start = true;
    for c in group.chars() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                at_start = true;
                current.clear();
                continue;
            }
            _ => {}
        }
        if depth == 0 && at_start {
            if c.is_alphanumeric() || c == '_' {
                current.push(c);
            } else if !current.is_empty() {
                parts.push(std::mem::take(&mut current));
                at_start = false;
            }
        }
    }
    if at_start && !current.is_empty() {
        parts.push(current);
    }
    parts
}

/// Within each folder, the files (and sub-folders) import each other without a cycle, so each
/// can be read, tested and replaced on its own (the crate's top-level modules are checked by
/// levels above). A folder's `mod.rs` stands apart: it declares
/// and re-exports its children and holds the state they share (the gateway's `Gateway`).
#[test]
fn sibling_files_import_each_other_without_a_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    // Per folder (module path), the arrows between its children.
    let mut arrows: BTreeMap<Vec<String>, BTreeSet<(String, String)>> = BTreeMap::new();
    let files = rust_files(&src);
    let children = child_modules(&src, &files);
    for file in &files {
        let own = module_path(file.strip_prefix(&src).unwrap());
        let code = production_code(&std::fs::read_to_string(file).unwrap());
        for target in referenced_paths(&code, &own) {
            // The deepest folder both paths lie in, and the child of it each one is in.
            let common = own.iter().zip(&target).take_while(|(a, b)| a == b).count();
            let (Some(from), Some(to)) = (own.get(common), target.get(common)) else {
                continue; // a module naming itself or its own mod.rs items
            };
            let folder = own[..common].to_vec();
            // Top-level modules are [`LEVELS`]' job (with a kind's spec file in the spec layer).
            if !folder.is_empty() && children.get(&folder).is_some_and(|c| c.contains(to)) {
                arrows
                    .entry(folder)
                    .or_default()
                    .insert((from.clone(), to.clone()));
            }
        }
    }
    let cycles: Vec<String> = arrows
        .iter()
        .filter_map(|(folder, edges)| {
            find_cycle(edges).map(|c| format!("src/{}: {}", folder.join("/"), c.join(" → ")))
        })
        .collect();
    assert!(
        cycles.is_empty(),
        "files import each other in a cycle (move the shared part to a file both import):\n  {}",
        cycles.join("\n  ")
    );
}

/// The check sees `super::` and `crate::` paths, groups, and ignores a folder's own `mod.rs`.
#[test]
fn the_sibling_check_finds_a_cycle_through_super_and_crate_paths() {
    let own = |p: &str| module_path(Path::new(p));
    let code = "use super::{access, routes::Handler};\nuse crate::gateway::handlers::error;\n";
    assert_eq!(
        referenced_paths(code, &own("gateway/routes.rs")),
        [
            vec!["gateway".to_string(), "access".into()],
            vec!["gateway".into(), "routes".into(), "Handler".into()],
            vec!["gateway".into(), "handlers".into(), "error".into()],
        ]
    );
    assert_eq!(
        referenced_paths(
            "use super::super::oip_codec::X;",
            &own("gateway/handlers/oip.rs")
        ),
        [vec!["gateway".to_string(), "oip_codec".into(), "X".into()]]
    );
    let edges: BTreeSet<(String, String)> = [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")]
        .iter()
        .map(|(f, t)| (f.to_string(), t.to_string()))
        .collect();
    assert_eq!(find_cycle(&edges).unwrap(), ["a", "b", "c", "a"]);
    let acyclic: BTreeSet<(String, String)> = edges.into_iter().filter(|(f, _)| f != "c").collect();
    assert_eq!(find_cycle(&acyclic), None);
}

/// `["gateway", "handlers", "oip"]` for `gateway/handlers/oip.rs`; a `mod.rs` is its folder.
fn module_path(relative: &Path) -> Vec<String> {
    let mut parts: Vec<String> = relative
        .components()
        .map(|c| {
            c.as_os_str()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_string()
        })
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// For each folder's module path, the names of its child modules (files and sub-folders).
fn child_modules(src: &Path, files: &[PathBuf]) -> BTreeMap<Vec<String>, BTreeSet<String>> {
    let mut children: BTreeMap<Vec<String>, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let mut path = module_path(file.strip_prefix(src).unwrap());
        if let Some(name) = path.pop() {
            children.entry(path).or_default().insert(name);
        }
    }
    children
}

/// Every `crate::…`, `super::…` and `self::…` path in `code`, resolved against the module
/// `own` to an absolute module path (its first segments; groups expanded).
fn referenced_paths(code: &str, own: &[String]) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let bytes = code.as_bytes();
    let mut i = 0;
    while i < code.len() {
        let at_word = i == 0
            || !(bytes[i - 1].is_ascii_alphanumeric()
                || bytes[i - 1] == b'_'
                || bytes[i - 1] == b':');
        let rest = &code[i..];
        let base: Option<(Vec<String>, usize)> = if !at_word {
            None
        } else if rest.starts_with("crate::") {
            Some((Vec::new(), "crate::".len()))
        } else if rest.starts_with("self::") {
            Some((own.to_vec(), "self::".len()))
        } else if rest.starts_with("super::") {
            let mut base = own.to_vec();
            let mut len = 0;
            while code[i + len..].starts_with("super::") {
                base.pop();
                len += "super::".len();
            }
            Some((base, len))
        } else {
            None
        };
        match base {
            Some((base, len)) => {
                let (paths, used) = path_tree(&code[i + len..]);
                found.extend(paths.into_iter().map(|tail| {
                    let mut full = base.clone();
                    full.extend(tail);
                    full
                }));
                i += len + used.max(1);
            }
            None => i += rest.chars().next().map_or(1, char::len_utf8),
        }
    }
    found
}

/// The paths of a use tree (`a::b`, `{a, b::{c, d}}`), each cut at three segments, and the
/// bytes read.
fn path_tree(text: &str) -> (Vec<Vec<String>>, usize) {
    let mut segments = Vec::new();
    let mut at = 0;
    loop {
        let rest = &text[at..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut paths = Vec::new();
            let mut used;
            let mut inner = group;
            loop {
                inner = inner.trim_start_matches(|c: char| c.is_whitespace() || c == ',');
                used = text.len() - at - inner.len();
                if inner.is_empty() || inner.starts_with('}') {
                    used += 1;
                    break;
                }
                let (tails, n) = path_tree(inner);
                if n == 0 {
                    break;
                }
                paths.extend(tails.into_iter().map(|t| {
                    let mut p = segments.clone();
                    p.extend(t);
                    p.truncate(3);
                    p
                }));
                inner = &inner[n..];
            }
            return (paths, at + used);
        }
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if name.is_empty() {
            return (
                vec![segments]
                    .into_iter()
                    .filter(|s| !s.is_empty())
                    .collect(),
                at,
            );
        }
        at += name.len();
        if name != "self" && segments.len() < 3 {
            segments.push(name);
        }
        if text[at..].starts_with("::") {
            at += 2;
        } else {
            return (vec![segments], at);
        }
    }
}

/// A cycle among `edges` as its nodes (first node repeated at the end), if there is one.
fn find_cycle(edges: &BTreeSet<(String, String)>) -> Option<Vec<String>> {
    fn visit<'a>(
        node: &'a str,
        edges: &'a BTreeSet<(String, String)>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|n| *n == node) {
            let mut cycle: Vec<String> = path[start..].iter().map(|n| n.to_string()).collect();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if !done.insert(node) {
            return None;
        }
        path.push(node);
        for (_, to) in edges.iter().filter(|(from, _)| from == node) {
            if let Some(cycle) = visit(to, edges, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    edges
        .iter()
        .find_map(|(from, _)| visit(from, edges, &mut Vec::new(), &mut done))
}

//! Bounds on spec files (pipelines, gateways, model registries), checked before the real
//! parse so that its cost stays linear in the file's size.
//!
//! The YAML parser (libyaml, through serde_yaml_ng) costs time per token proportional to the
//! current flow nesting (`[[[[` or `{a: {a: `): 40,000 levels in an 80 KB file took 2.9 s
//! and quadrupled with each doubling. serde_yaml_ng's own depth limit (128) only applies after
//! the whole document has been parsed, and its alias limit allows a hundred dereferences per
//! event, each replaying its anchor, so a few KiB of aliases can expand quadratically
//! ("billion laughs").
//!
//! [`check`] refuses, with the line and column where it happens:
//! - a file over [`MAX_SPEC_BYTES`];
//! - mappings and sequences nested deeper than [`MAX_DEPTH`] (flow `[`/`{` and block
//!   indentation or `- ` alike, counted after aliases are expanded);
//! - aliases that expand the document by more than [`MAX_ALIAS_NODES`] nodes.
//!
//! It runs the same libyaml parser serde_yaml_ng uses, stopping at the first event past a
//! limit, so it cannot disagree with the real parse about where nesting is (a separate
//! scanner could be fooled by quoting or block scalars), and every event costs at most
//! [`MAX_DEPTH`] steps. Syntax errors are left to the real parse, which reports them with its
//! usual message.

use std::collections::HashMap;
use std::ffi::CStr;
use std::mem::MaybeUninit;
use std::path::Path;

use unsafe_libyaml as unsafe_yaml;

use super::SpecError;

/// Largest spec file read. Real pipeline and gateway files are a few KiB and a generated
/// registry of thousands of models stays well under a MiB; 4 MiB keeps the worst case (now
/// linear) parse under a second on a slow machine.
pub const MAX_SPEC_BYTES: usize = 4 << 20;

/// Deepest nesting of mappings and sequences. The deepest real pipeline nests about a dozen
/// levels (models → versions → endpoint → headers ...); serde_yaml_ng gives up at 128 anyway,
/// only after parsing everything, and with a less useful message.
pub const MAX_DEPTH: usize = 64;

/// Most nodes aliases (`*name`) may add to a document: generous for anchors reused across
/// many models or outputs, and far below what makes parsing slow or memory-hungry.
pub const MAX_ALIAS_NODES: u64 = 100_000;

/// Refuses `text` (read from `file`) when it is over a limit; the error names the line.
pub fn check(text: &str, file: &Path) -> Result<(), SpecError> {
    if text.len() > MAX_SPEC_BYTES {
        return Err(too_large(file, text.len() as u64));
    }
    let at = |mark: unsafe_yaml::yaml_mark_t, message: String| SpecError {
        file: file.to_path_buf(),
        path: String::new(),
        line_column: Some((mark.line as usize + 1, mark.column as usize + 1)),
        message,
    };
    let Some(mut parser) = Parser::new(text.as_bytes()) else {
        return Ok(());
    };
    let mut open: Vec<Open> = Vec::new();
    // Per anchor: the nodes and the nesting depth (1 for a scalar) of the anchored node.
    let mut anchors: HashMap<Vec<u8>, (u64, usize)> = HashMap::new();
    let mut alias_nodes: u64 = 0;
    while let Some((event, mark)) = parser.next() {
        // A finished node: its size and depth go to its parent and, if anchored, its anchor.
        let mut done: Option<(Option<Vec<u8>>, u64, usize)> = None;
        match event {
            Event::Start(anchor) => {
                if open.len() >= MAX_DEPTH {
                    return Err(at(
                        mark,
                        format!("mappings and sequences nest deeper than {MAX_DEPTH} levels"),
                    ));
                }
                open.push(Open {
                    anchor,
                    nodes: 1,
                    depth: 1,
                });
            }
            Event::End => {
                if let Some(node) = open.pop() {
                    done = Some((node.anchor, node.nodes, node.depth));
                }
            }
            Event::Scalar(anchor) => done = Some((anchor, 1, 0)),
            Event::Alias(name) => {
                // An unknown anchor is the real parse's error to report.
                let Some(&(nodes, depth)) = anchors.get(&name) else {
                    return Ok(());
                };
                if open.len() + depth > MAX_DEPTH {
                    return Err(at(
                        mark,
                        format!(
                            "with this alias expanded, mappings and sequences nest deeper than {MAX_DEPTH} levels"
                        ),
                    ));
                }
                alias_nodes = alias_nodes.saturating_add(nodes);
                if alias_nodes > MAX_ALIAS_NODES {
                    return Err(at(
                        mark,
                        format!(
                            "aliases expand the document by more than {MAX_ALIAS_NODES} nodes; write the values out or reuse fewer"
                        ),
                    ));
                }
                done = Some((None, nodes, depth));
            }
            Event::DocumentStart => anchors.clear(),
            Event::Other => {}
        }
        if let Some((anchor, nodes, depth)) = done {
            if let Some(parent) = open.last_mut() {
                parent.nodes = parent.nodes.saturating_add(nodes);
                parent.depth = parent.depth.max(depth + 1);
            }
            if let Some(anchor) = anchor {
                anchors.insert(anchor, (nodes, depth));
            }
        }
    }
    Ok(())
}

/// The error for a file of `bytes` bytes, over [`MAX_SPEC_BYTES`].
pub fn too_large(file: &Path, bytes: u64) -> SpecError {
    SpecError::at(
        file,
        "",
        format!(
            "the file has {bytes} bytes; spec files are limited to {} MiB",
            MAX_SPEC_BYTES >> 20
        ),
    )
}

/// A mapping or sequence being parsed.
struct Open {
    anchor: Option<Vec<u8>>,
    /// Nodes in it so far, itself included, aliases expanded.
    nodes: u64,
    /// Its nesting depth so far (1: no collection inside).
    depth: usize,
}

/// What [`check`] needs of a libyaml event.
enum Event {
    /// A mapping or sequence starts, with its anchor.
    Start(Option<Vec<u8>>),
    /// A mapping or sequence ends.
    End,
    /// A scalar, with its anchor.
    Scalar(Option<Vec<u8>>),
    /// An alias, by anchor name.
    Alias(Vec<u8>),
    DocumentStart,
    Other,
}

/// libyaml's event parser over a borrowed input.
struct Parser<'input> {
    /// Boxed: libyaml keeps a pointer to the parser inside it, so it must not move.
    raw: Box<MaybeUninit<unsafe_yaml::yaml_parser_t>>,
    _input: std::marker::PhantomData<&'input [u8]>,
}

impl<'input> Parser<'input> {
    fn new(input: &'input [u8]) -> Option<Self> {
        let mut raw = Box::new(MaybeUninit::<unsafe_yaml::yaml_parser_t>::uninit());
        let parser = raw.as_mut_ptr();
        // SAFETY: `parser` points to writable memory for a yaml_parser_t, which
        // yaml_parser_initialize fully initializes (or reports failure, in which case it is
        // never used nor deleted). The input outlives the parser (`'input`), and the parser
        // stays at its boxed address until dropped.
        unsafe {
            if unsafe_yaml::yaml_parser_initialize(parser).fail {
                return None;
            }
            unsafe_yaml::yaml_parser_set_encoding(parser, unsafe_yaml::YAML_UTF8_ENCODING);
            unsafe_yaml::yaml_parser_set_input_string(parser, input.as_ptr(), input.len() as u64);
        }
        Some(Parser {
            raw,
            _input: std::marker::PhantomData,
        })
    }

    /// The next event and where it starts; `None` at the end of the stream or at a syntax
    /// error.
    fn next(&mut self) -> Option<(Event, unsafe_yaml::yaml_mark_t)> {
        let mut event = MaybeUninit::<unsafe_yaml::yaml_event_t>::uninit();
        // SAFETY: the parser was initialized in `new`. yaml_parser_parse initializes `event`
        // when it succeeds; it is read only then, its anchor strings are copied while it is
        // alive (they are NUL-terminated or null), and it is deleted exactly once.
        unsafe {
            if unsafe_yaml::yaml_parser_parse(self.raw.as_mut_ptr(), event.as_mut_ptr()).fail {
                return None;
            }
            let raw = &*event.as_ptr();
            let anchor = |ptr: *mut u8| {
                (!ptr.is_null()).then(|| CStr::from_ptr(ptr.cast()).to_bytes().to_vec())
            };
            let converted = match raw.type_ {
                unsafe_yaml::YAML_NO_EVENT | unsafe_yaml::YAML_STREAM_END_EVENT => None,
                unsafe_yaml::YAML_SEQUENCE_START_EVENT => {
                    Some(Event::Start(anchor(raw.data.sequence_start.anchor)))
                }
                unsafe_yaml::YAML_MAPPING_START_EVENT => {
                    Some(Event::Start(anchor(raw.data.mapping_start.anchor)))
                }
                unsafe_yaml::YAML_SEQUENCE_END_EVENT | unsafe_yaml::YAML_MAPPING_END_EVENT => {
                    Some(Event::End)
                }
                unsafe_yaml::YAML_SCALAR_EVENT => {
                    Some(Event::Scalar(anchor(raw.data.scalar.anchor)))
                }
                unsafe_yaml::YAML_ALIAS_EVENT => anchor(raw.data.alias.anchor).map(Event::Alias),
                unsafe_yaml::YAML_DOCUMENT_START_EVENT => Some(Event::DocumentStart),
                _ => Some(Event::Other),
            };
            let mark = raw.start_mark;
            unsafe_yaml::yaml_event_delete(event.as_mut_ptr());
            converted.map(|e| (e, mark))
        }
    }
}

impl Drop for Parser<'_> {
    fn drop(&mut self) {
        // SAFETY: initialized in `new` (a parser that failed to initialize is never built),
        // deleted once.
        unsafe { unsafe_yaml::yaml_parser_delete(self.raw.as_mut_ptr()) }
    }
}

#[cfg(test)]
mod tests_support {
    pub(super) fn flow(depth: usize) -> String {
        format!("name: x\nsql: {}{}\n", "[".repeat(depth), "]".repeat(depth))
    }

    pub(super) fn flow_map(depth: usize) -> String {
        format!(
            "name: x\nsql: {}1{}\n",
            "{a: ".repeat(depth),
            "}".repeat(depth)
        )
    }

    pub(super) fn block_map(depth: usize) -> String {
        let mut s = String::from("name: x\nsql:\n");
        for i in 0..depth {
            s.push_str(&" ".repeat(i + 1));
            s.push_str("a:\n");
        }
        s
    }

    pub(super) fn block_seq(depth: usize) -> String {
        format!("name: x\nsql:\n  {}x\n", "- ".repeat(depth))
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::*;
    use super::*;

    fn refused(text: &str) -> SpecError {
        check(text, Path::new("p.yaml")).expect_err("refused")
    }

    #[test]
    fn nesting_is_bounded_in_flow_and_block_style() {
        // The document is one level, `sql`'s value the next ones.
        /// Name, generator, and where the first level too deep is.
        type Case = (&'static str, fn(usize) -> String, (usize, usize));
        let makers: [Case; 4] = [
            ("flow", flow, (2, 69)),
            ("flow map", flow_map, (2, 258)),
            ("block map", block_map, (66, 65)),
            ("block seq", block_seq, (3, 129)),
        ];
        for (name, make, line_column) in makers {
            assert_eq!(
                check(&make(MAX_DEPTH - 1), Path::new("p.yaml")),
                Ok(()),
                "{name}"
            );
            // Block mappings need a line per level, so the file grows with the square of the
            // depth: 2,000 levels are 2 MB.
            let deepest = if name == "block map" { 2_000 } else { 100_000 };
            for depth in [MAX_DEPTH, deepest] {
                let e = refused(&make(depth));
                assert_eq!(
                    e.message, "mappings and sequences nest deeper than 64 levels",
                    "{name}"
                );
                assert_eq!(e.line_column, Some(line_column), "{name}");
                assert_eq!(
                    e.to_string().split(':').nth(1),
                    Some(line_column.0.to_string().as_str())
                );
            }
        }
    }

    #[test]
    fn quoting_and_block_scalars_do_not_count() {
        let text = format!(
            "name: x\nsql: |\n  {}\ndescription: \"{}\"\nother: '{}'\n# {}\n",
            "[".repeat(1000),
            "{".repeat(1000),
            "[".repeat(1000),
            "[".repeat(1000)
        );
        assert_eq!(check(&text, Path::new("p.yaml")), Ok(()));
    }

    #[test]
    fn aliases_are_counted_expanded() {
        // "Billion laughs": each level aliases the previous one ten times.
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let refs = vec![format!("*a{}", i - 1); 10].join(", ");
            text.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        let e = refused(&text);
        assert!(
            e.message
                .starts_with("aliases expand the document by more than 100000 nodes")
        );
        assert_eq!(e.line_column.map(|l| l.0), Some(5));
        // Reuse within the budget is fine.
        let text = "base: &b {x: 1, y: [1, 2]}\none: *b\ntwo: *b\n";
        assert_eq!(check(text, Path::new("p.yaml")), Ok(()));
        // Depth through aliases counts too.
        let deep = format!("a: &a {}1{}\n", "[".repeat(40), "]".repeat(40));
        let text = format!("{deep}b: {}*a{}\n", "[".repeat(30), "]".repeat(30));
        let e = refused(&text);
        assert!(
            e.message.starts_with("with this alias expanded"),
            "{}",
            e.message
        );
    }

    #[test]
    fn size_is_bounded_and_syntax_errors_are_left_to_the_parser() {
        let big = format!("name: \"{}\"\n", "x".repeat(MAX_SPEC_BYTES));
        let e = refused(&big);
        assert!(
            e.message.contains("spec files are limited to 4 MiB"),
            "{}",
            e.message
        );
        assert_eq!(check("a: [1, 2\nb: {", Path::new("p.yaml")), Ok(()));
        assert_eq!(check("a: *nowhere\n", Path::new("p.yaml")), Ok(()));
    }
}

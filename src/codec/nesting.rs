//! How deeply JSON text nests, checked in one linear pass before a parser sees it.
//!
//! Parsers of outside JSON differ: serde_json stops at 128 levels when it builds values but
//! skips ignored and raw values at any depth; arrow-json's tape decoder reads any depth, but
//! formats a mistyped value recursively for its error message, so a record holding a value
//! nested 100,000 levels deep where a number is declared overflows the stack and aborts the
//! process. [`check_json_depth`] refuses such text up front, cheaply.

/// Deepest nesting of arrays and objects accepted in JSON from outside (records, request
/// bodies). Real records and requests nest a handful of levels; this is far below what any
/// recursive code path needs to stay clear of the stack's end.
pub const MAX_JSON_DEPTH: usize = 64;

/// `Err(at)` when `json` nests arrays and objects deeper than `max`, `at` being the byte
/// offset of the bracket that goes too deep. One pass and no allocation, linear in the text;
/// text with no more than `max` brackets in all is let through after a vectorised count.
/// Only depth is checked; syntax is left to the parser (brackets inside strings, escaped
/// quotes included, are not nesting).
pub fn check_json_depth(json: &[u8], max: usize) -> Result<(), usize> {
    if memchr::memchr2_iter(b'[', b'{', json).take(max + 1).count() <= max {
        return Ok(());
    }
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (at, byte) in json.iter().enumerate() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return Err(at);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_is_counted_outside_strings_only() {
        assert_eq!(check_json_depth(b"[[1]]", 2), Ok(()));
        assert_eq!(check_json_depth(b"[[[1]]]", 2), Err(2));
        assert_eq!(
            check_json_depth(br#"{"a": [1], "b": {"c": [2]}}"#, 3),
            Ok(())
        );
        assert_eq!(
            check_json_depth(br#"{"a": [1], "b": {"c": [[2]]}}"#, 3),
            Err(23)
        );
        // Brackets in strings, after escaped quotes too, do not count.
        let quoted = format!(r#"{{"a": "\"{}\\", "b": [1]}}"#, "[".repeat(100));
        assert_eq!(check_json_depth(quoted.as_bytes(), 2), Ok(()));
        // Many brackets in sequence are not depth.
        assert_eq!(check_json_depth("[1],".repeat(1000).as_bytes(), 1), Ok(()));
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(
            check_json_depth(deep.as_bytes(), MAX_JSON_DEPTH),
            Err(MAX_JSON_DEPTH)
        );
    }
}

//! Collecting validation problems. Every part of the spec, and every component kind's spec,
//! checks itself into one [`Problems`] list, each problem with its path in the file, so a user
//! fixes a file in one round.

/// Problems found so far: (path in the file, message).
#[derive(Debug, Default)]
pub struct Problems(Vec<(String, String)>);

impl Problems {
    /// No problems yet.
    pub fn new() -> Self {
        Problems::default()
    }

    /// Records a problem at `path`.
    pub fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push((path.into(), message.into()));
    }

    /// Records a problem if `value` is blank: "is empty: expected {expected}".
    pub fn not_empty(&mut self, path: &str, value: &str, expected: &str) {
        if value.trim().is_empty() {
            self.error(path, format!("is empty: expected {expected}"));
        }
    }

    /// Adds problems found elsewhere.
    pub fn extend(&mut self, problems: impl IntoIterator<Item = (String, String)>) {
        self.0.extend(problems);
    }

    /// Whether nothing was found.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The problems, in the order found.
    pub fn into_vec(self) -> Vec<(String, String)> {
        self.0
    }
}

/// Whether `name` is a valid pipeline or output name: 1 to 63 characters from lowercase ASCII
/// letters, digits, `-` and `_`, starting with a letter or digit.
pub(crate) fn is_valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (1..=63).contains(&bytes.len())
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes
            .iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

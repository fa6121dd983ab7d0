//! NATS subjects as configured: well-formedness of subjects and patterns, and publish
//! subject templates built from columns. Pure parsing, shared by validation and the NATS
//! source and sink.

/// Why a subject or subject pattern is not well formed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubjectError {
    /// The subject is empty.
    #[error("is empty")]
    Empty,
    /// Two dots in a row, or a dot at either end.
    #[error("{0:?} has an empty token")]
    EmptyToken(String),
    /// White space or a control character.
    #[error("{0:?} contains white space")]
    WhiteSpace(String),
    /// A wildcard where only literal subjects are allowed.
    #[error("{0:?} has a wildcard: publish subjects must be literal")]
    Wildcard(String),
    /// `*` or `>` inside a token, or `>` before the last token.
    #[error("{0:?}: `*` and `>` are only allowed as whole tokens (`>` last)")]
    MisplacedWildcard(String),
}

/// Checks that a subject or subject pattern is well formed: non-empty dot-separated tokens
/// without white space, `*` only as a whole token and `>` only as the last token.
pub fn check_subject(subject: &str, wildcards: bool) -> Result<(), SubjectError> {
    if subject.is_empty() {
        return Err(SubjectError::Empty);
    }
    let tokens: Vec<&str> = subject.split('.').collect();
    for (i, token) in tokens.iter().enumerate() {
        if token.is_empty() {
            return Err(SubjectError::EmptyToken(subject.to_string()));
        }
        if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(SubjectError::WhiteSpace(subject.to_string()));
        }
        let wildcard = *token == "*" || (*token == ">" && i == tokens.len() - 1);
        if wildcard && !wildcards {
            return Err(SubjectError::Wildcard(subject.to_string()));
        }
        if !wildcard && token.contains(['*', '>']) {
            return Err(SubjectError::MisplacedWildcard(subject.to_string()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects() {
        for ok in ["a", "a.b", "orders.*", "orders.>", "*.x.>"] {
            assert_eq!(check_subject(ok, true), Ok(()), "{ok}");
        }
        for bad in ["", "a..b", ".a", "a.", "a b", "a.b*", "a.>.b", "a.>x"] {
            assert!(check_subject(bad, true).is_err(), "{bad}");
        }
        assert!(check_subject("orders.*", false).is_err());
        assert_eq!(check_subject("orders.eu", false), Ok(()));
    }
}

/// One token of a publish subject template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubjectToken {
    /// A literal token.
    Literal(String),
    /// A token taken from a column's value.
    Column(String),
}

/// Why a publish subject template cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The template is empty.
    #[error("is empty")]
    Empty,
    /// A `{column}` that is only part of a token.
    #[error("{0:?}: `{{column}}` must be a whole token (`a.{{col}}.b`)")]
    PartialToken(String),
    /// A `{...}` token that does not name a column.
    #[error("{template:?}: `{token}` is not a column placeholder")]
    NotAPlaceholder {
        /// The template.
        template: String,
        /// The token.
        token: String,
    },
    /// A literal token that is not a valid subject token.
    #[error("{template:?}: {source}")]
    Literal {
        /// The template.
        template: String,
        /// What is wrong with the token.
        #[source]
        source: SubjectError,
    },
    /// The first token is a column.
    #[error(
        "{0:?} starts with a column: begin with a literal prefix (`alerts.{{col}}`) so rows \
         cannot publish to arbitrary subjects"
    )]
    StartsWithColumn(String),
}

/// A publish subject built from columns: `fraud.alerts.{merchant_country}`. Column values
/// become single safe tokens, so every subject stays under the literal prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectTemplate {
    tokens: Vec<SubjectToken>,
}

impl SubjectTemplate {
    /// Parses a template. Each `{column}` must be a whole token, and at least the first token
    /// must be literal (the prefix every subject stays under).
    pub fn parse(template: &str) -> Result<Self, TemplateError> {
        if template.is_empty() {
            return Err(TemplateError::Empty);
        }
        let mut tokens = Vec::new();
        for token in template.split('.') {
            if let Some(inner) = token.strip_prefix('{') {
                let column = inner
                    .strip_suffix('}')
                    .ok_or_else(|| TemplateError::PartialToken(template.to_string()))?;
                if column.is_empty() || column.contains(['{', '}']) {
                    return Err(TemplateError::NotAPlaceholder {
                        template: template.to_string(),
                        token: token.to_string(),
                    });
                }
                tokens.push(SubjectToken::Column(column.to_string()));
            } else if token.contains(['{', '}']) {
                return Err(TemplateError::PartialToken(template.to_string()));
            } else {
                check_subject(token, false).map_err(|source| TemplateError::Literal {
                    template: template.to_string(),
                    source,
                })?;
                tokens.push(SubjectToken::Literal(token.to_string()));
            }
        }
        if !matches!(tokens.first(), Some(SubjectToken::Literal(_))) {
            return Err(TemplateError::StartsWithColumn(template.to_string()));
        }
        Ok(SubjectTemplate { tokens })
    }

    /// The columns the template reads.
    pub fn columns(&self) -> impl Iterator<Item = &str> {
        self.tokens.iter().filter_map(|t| match t {
            SubjectToken::Column(c) => Some(c.as_str()),
            SubjectToken::Literal(_) => None,
        })
    }

    /// The literal tokens before the first column (`fraud.alerts` for
    /// `fraud.alerts.{country}`): the prefix every subject stays under.
    pub fn literal_prefix(&self) -> String {
        self.tokens
            .iter()
            .map_while(|t| match t {
                SubjectToken::Literal(l) => Some(l.as_str()),
                SubjectToken::Column(_) => None,
            })
            .collect::<Vec<_>>()
            .join(".")
    }

    /// Whether the template has no column (the same subject for every row).
    pub fn is_literal(&self) -> bool {
        self.columns().next().is_none()
    }

    /// Renders the subject; `value(column)` gives the row's value of a column.
    pub fn render<'a>(&'a self, mut value: impl FnMut(&'a str) -> Option<&'a str>) -> String {
        let mut subject = String::new();
        for (i, token) in self.tokens.iter().enumerate() {
            if i > 0 {
                subject.push('.');
            }
            match token {
                SubjectToken::Literal(l) => subject.push_str(l),
                SubjectToken::Column(c) => push_safe_token(&mut subject, value(c).unwrap_or("")),
            }
        }
        subject
    }
}

/// Appends `value` as exactly one subject token: separators, wildcards, white space and
/// control characters become `_`; an empty value becomes `_`.
fn push_safe_token(subject: &mut String, value: &str) {
    if value.is_empty() {
        subject.push('_');
        return;
    }
    subject.extend(value.chars().map(|c| {
        if matches!(c, '.' | '*' | '>') || c.is_whitespace() || c.is_control() {
            '_'
        } else {
            c
        }
    }));
}

#[cfg(test)]
mod template_tests {
    use super::*;

    #[test]
    fn parses_and_renders_confined_to_the_prefix() {
        let t = SubjectTemplate::parse("alerts.{country}.{merchant}").unwrap();
        assert_eq!(t.columns().collect::<Vec<_>>(), ["country", "merchant"]);
        let rendered = t.render(|c| match c {
            "country" => Some("DE"),
            _ => Some("evil.>.* x"),
        });
        assert_eq!(rendered, "alerts.DE.evil_____x");
        assert_eq!(t.render(|_| None), "alerts._._");
        assert!(SubjectTemplate::parse("alerts").unwrap().is_literal());
    }

    #[test]
    fn rejects_bad_templates() {
        for bad in ["", "{c}.x", "a.b{c}", "a.{c", "a.{}", "a..b", "a.*", "a.>"] {
            assert!(SubjectTemplate::parse(bad).is_err(), "{bad}");
        }
    }
}

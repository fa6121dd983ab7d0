//! Output selectors of inference steps: where an output value is in a model's answer. Pure
//! parsing, shared by validation and the protocol clients.

/// Where an output value is in a model's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// A named output tensor; with `index`, column `index` of an `[N, k]` tensor.
    Tensor {
        /// Output name.
        name: String,
        /// Column of a 2-D output.
        index: Option<usize>,
    },
    /// A JSON pointer into a row's result (custom JSON) or a JSON answer (OpenAI chat).
    Pointer(String),
    /// The whole text answer (OpenAI chat).
    Text,
    /// The embedding vector (OpenAI embeddings).
    Embedding,
}

/// Which selector syntax a protocol accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelectorSyntax {
    /// `name` or `name[i]`.
    Tensor,
    /// `text` or a JSON pointer.
    ChatAnswer,
    /// `embedding`.
    Embedding,
    /// A JSON pointer.
    Pointer,
}

/// Why an output's `from` is not a selector of its protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
// Each variant reads as its message: "not text or a pointer", "not a tensor".
#[allow(clippy::enum_variant_names)]
pub enum SelectorError {
    /// Chat answers: neither `text` nor a JSON pointer.
    #[error("`{0}` is not `text` or a JSON pointer like `/label`")]
    NotTextOrPointer(String),
    /// Not a JSON pointer.
    #[error("`{0}` is not a JSON pointer (it must start with `/`, like `/score`)")]
    NotAPointer(String),
    /// Embeddings: anything but `embedding`.
    #[error("`{0}`: an embeddings model has one output, `embedding`")]
    NotEmbedding(String),
    /// Tensors: neither `name` nor `name[i]`.
    #[error("`{0}` is not an output name or `name[i]`")]
    NotATensor(String),
}

impl Selector {
    /// Parses `from` of an inference output for a protocol.
    pub fn parse(from: &str, syntax: SelectorSyntax) -> Result<Selector, SelectorError> {
        match syntax {
            SelectorSyntax::Tensor => parse_tensor_selector(from),
            SelectorSyntax::ChatAnswer if from == "text" => Ok(Selector::Text),
            SelectorSyntax::ChatAnswer | SelectorSyntax::Pointer if from.starts_with('/') => {
                Ok(Selector::Pointer(from.to_string()))
            }
            SelectorSyntax::ChatAnswer => Err(SelectorError::NotTextOrPointer(from.to_string())),
            SelectorSyntax::Pointer => Err(SelectorError::NotAPointer(from.to_string())),
            SelectorSyntax::Embedding if from == "embedding" => Ok(Selector::Embedding),
            SelectorSyntax::Embedding => Err(SelectorError::NotEmbedding(from.to_string())),
        }
    }
}

fn parse_tensor_selector(from: &str) -> Result<Selector, SelectorError> {
    let bad = || SelectorError::NotATensor(from.to_string());
    match from.split_once('[') {
        None if !from.is_empty() && !from.contains(']') => Ok(Selector::Tensor {
            name: from.to_string(),
            index: None,
        }),
        None => Err(bad()),
        Some((name, rest)) => {
            let index = rest
                .strip_suffix(']')
                .and_then(|i| i.parse::<usize>().ok())
                .ok_or_else(bad)?;
            if name.is_empty() {
                return Err(bad());
            }
            Ok(Selector::Tensor {
                name: name.to_string(),
                index: Some(index),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors() {
        let t = |s| Selector::parse(s, SelectorSyntax::Tensor);
        assert_eq!(
            t("probabilities[1]"),
            Ok(Selector::Tensor {
                name: "probabilities".into(),
                index: Some(1)
            })
        );
        assert_eq!(
            t("score"),
            Ok(Selector::Tensor {
                name: "score".into(),
                index: None
            })
        );
        for bad in ["", "x[", "x[a]", "[1]", "x]"] {
            assert!(t(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Selector::parse("text", SelectorSyntax::ChatAnswer),
            Ok(Selector::Text)
        );
        assert!(Selector::parse("label", SelectorSyntax::ChatAnswer).is_err());
        assert!(Selector::parse("/label", SelectorSyntax::Pointer).is_ok());
        assert!(Selector::parse("vector", SelectorSyntax::Embedding).is_err());
    }
}

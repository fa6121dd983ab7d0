//! Whether a model version is answering at all. The balance layer counts every answer a live
//! model gives (a success, or an error only a live model returns); the retry layer asks
//! whether any call got one while its own call was trying. A call that failed on
//! unavailability or silence while no call got an answer means the version looks down, not
//! just failing this call ([`crate::inference::error::InferError::model_down`]).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::inference::error::{ErrorKind, InferError};
use crate::inference::protocol::CallOutput;

/// Answers counted for one version.
#[derive(Debug, Default)]
pub(crate) struct Liveness {
    answers: AtomicU64,
}

impl Liveness {
    /// A mark to compare later answers with (taken when a call starts).
    pub(crate) fn mark(&self) -> u64 {
        self.answers.load(Ordering::Relaxed)
    }

    /// Counts the outcome of a sent attempt when it shows the model is up: an answer, a
    /// rejection, a broken answer or a server error.
    pub(crate) fn observe(&self, result: &Result<CallOutput, InferError>) {
        let answered = match result {
            Ok(_) => true,
            Err(e) => matches!(
                e.kind,
                ErrorKind::Rejected | ErrorKind::Contract | ErrorKind::ServerError
            ),
        };
        if answered {
            self.answers.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether an answer was counted since `mark`.
    pub(crate) fn answered_since(&self, mark: u64) -> bool {
        self.answers.load(Ordering::Relaxed) != mark
    }

    /// Whether `error`, from a call that started at `mark`, means the version looks down:
    /// nothing but unavailability or silence, and no call got an answer meanwhile. A model
    /// that answers (even with errors) is up.
    pub(crate) fn looks_down(&self, error: &InferError, mark: u64) -> bool {
        matches!(
            error.kind,
            ErrorKind::Unavailable | ErrorKind::Timeout | ErrorKind::Deadline
        ) && !self.answered_since(mark)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(kind: ErrorKind) -> Result<CallOutput, InferError> {
        Err(InferError::new(kind, "x"))
    }

    #[test]
    fn only_answers_of_a_live_model_count() {
        let live = Liveness::default();
        let mark = live.mark();
        for kind in [
            ErrorKind::Connect,
            ErrorKind::Timeout,
            ErrorKind::Unavailable,
            ErrorKind::Throttled,
        ] {
            live.observe(&err(kind));
        }
        assert!(
            !live.answered_since(mark),
            "silence and refusals are not answers"
        );
        for kind in [
            ErrorKind::Rejected,
            ErrorKind::Contract,
            ErrorKind::ServerError,
        ] {
            let mark = live.mark();
            live.observe(&err(kind));
            assert!(live.answered_since(mark), "{kind:?}");
        }
        let mark = live.mark();
        live.observe(&Ok(CallOutput::columns(vec![])));
        assert!(live.answered_since(mark));
    }

    #[test]
    fn a_version_looks_down_only_when_silent_and_unanswered() {
        let live = Liveness::default();
        let mark = live.mark();
        let unavailable = InferError::new(ErrorKind::Unavailable, "503");
        assert!(live.looks_down(&unavailable, mark));
        assert!(!live.looks_down(&InferError::new(ErrorKind::Rejected, "400"), mark));
        live.observe(&Ok(CallOutput::columns(vec![])));
        assert!(
            !live.looks_down(&unavailable, mark),
            "another call got an answer meanwhile"
        );
    }
}

//! Outermost layer: a call to a model gets one deadline (the model's `deadline` from now),
//! which bounds its retries, its fallback and every attempt below.

use std::time::Duration;

use tokio::time::Instant;

use super::service::{Call, ModelCall, Service, VersionCall};
use crate::inference::error::InferError;
use crate::inference::types::Answer;

/// Sets the deadline of a model call.
pub(crate) struct Deadline<S> {
    limit: Duration,
    inner: S,
}

impl<S> Deadline<S> {
    /// Calls through `inner`, each with `limit` from its start.
    pub(crate) fn new(limit: Duration, inner: S) -> Self {
        Deadline { limit, inner }
    }
}

impl<'a, S> Service<ModelCall<'a>> for Deadline<S>
where
    S: Service<VersionCall<'a>, Response = Answer, Error = InferError>,
{
    type Response = Answer;
    type Error = InferError;

    async fn call(&self, request: ModelCall<'a>) -> Result<Answer, InferError> {
        let call = Call {
            inputs: request.inputs,
            contract: request.contract,
            deadline: Instant::now() + self.limit,
        };
        let version = request.version;
        self.inner.call(VersionCall { version, call }).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inference::layers::testing::{answer, contract, rows};
    use std::sync::Mutex;

    /// Records the requests it gets.
    #[derive(Default)]
    struct Seen(Mutex<Vec<(usize, Instant)>>);

    impl<'a> Service<VersionCall<'a>> for Seen {
        type Response = Answer;
        type Error = InferError;
        async fn call(&self, request: VersionCall<'a>) -> Result<Answer, InferError> {
            let seen = (request.version, request.call.deadline);
            self.0.lock().unwrap().push(seen);
            Ok(answer("r"))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn each_call_gets_the_limit_from_its_own_start() {
        let layer = Deadline::new(Duration::from_millis(500), Seen::default());
        let (inputs, contract) = (rows(1), contract());
        let request = |version| ModelCall {
            version,
            inputs: &inputs,
            contract: &contract,
        };
        let first = Instant::now();
        layer.call(request(1)).await.unwrap();
        tokio::time::advance(Duration::from_secs(3)).await;
        layer.call(request(0)).await.unwrap();
        let seen = layer.inner.0.lock().unwrap().clone();
        let later = first + Duration::from_secs(3);
        assert_eq!(
            seen,
            [
                (1, first + Duration::from_millis(500)),
                (0, later + Duration::from_millis(500))
            ]
        );
    }
}

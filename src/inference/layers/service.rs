//! The shape of every layer of a model call, and what passes between two layers.
//!
//! A layer is a [`Service`] over `&self`, not a `tower::Service`: a version's layers are shared
//! by every concurrent call to it (the batchers of all steps, the gateway), and tower's
//! `call(&mut self)` after `poll_ready` would need a clone of the stack or a buffer task (a
//! lock and a channel hop) on every call. This is the reasoning that kept `tower::balance` out
//! of [`crate::inference::balance`], applied to the whole path.
//!
//! Each boundary has its own request type, and each layer is generic over the next one, bound
//! by the request it sends down. Only one layer serves each request type, so each layer has
//! exactly one possible inner layer: a stack in another order does not compile (see
//! [`super::stack`]).

use std::future::Future;
use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;
use tokio::time::Instant;

use crate::inference::balance::Replica;
use crate::inference::error::InferError;
use crate::inference::protocol::Contract;

/// One layer of the call path: serves `Request`, shared by concurrent calls.
pub(crate) trait Service<Request>: Send + Sync {
    /// What a successful call returns.
    type Response;
    /// What a failed call returns.
    type Error;

    /// Serves `request`.
    fn call(
        &self,
        request: Request,
    ) -> impl Future<Output = Result<Self::Response, Self::Error>> + Send;
}

/// A model version, as the fallback layer names it in metrics and messages.
pub(crate) trait Named {
    /// Model name.
    fn model(&self) -> &Arc<str>;
    /// Version name.
    fn version(&self) -> &Arc<str>;
}

/// What a model is asked (the deadline layer's request): rows for one of its versions.
#[derive(Clone, Copy)]
pub(crate) struct ModelCall<'a> {
    /// Index of the version in the model's router.
    pub version: usize,
    /// The contract's input columns.
    pub inputs: &'a RecordBatch,
    /// What is sent and read back.
    pub contract: &'a Contract,
}

/// Below the deadline (the fallback layer's request): the call, for one version.
#[derive(Clone, Copy)]
pub(crate) struct VersionCall<'a> {
    /// Index of the version in the model's router.
    pub version: usize,
    /// The call.
    pub call: Call<'a>,
}

/// What a version serves (the retry layer's request): rows, contract and deadline.
#[derive(Clone, Copy)]
pub(crate) struct Call<'a> {
    /// The contract's input columns.
    pub inputs: &'a RecordBatch,
    /// What is sent and read back.
    pub contract: &'a Contract,
    /// When the call must be over, retries included.
    pub deadline: Instant,
}

/// Below retry (the balance layer's request): one attempt.
pub(crate) struct Attempt<'a> {
    /// The call.
    pub call: Call<'a>,
    /// The replica that just failed, avoided when another is available.
    pub avoid: Option<Arc<Replica>>,
}

/// A failed attempt, with the replica it went to (so a retry can avoid it).
pub(crate) struct Failed {
    /// Why.
    pub error: InferError,
    /// The replica tried (`None` when none could be picked).
    pub replica: Option<Arc<Replica>>,
}

impl std::fmt::Debug for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let replica = self.replica.as_ref().map(|r| &*r.address);
        f.debug_struct("Failed")
            .field("error", &self.error)
            .field("replica", &replica)
            .finish()
    }
}

/// Below balance (the attempt timeout's request): the attempt on the chosen replica, which
/// holds one of the replica's in-flight slots.
pub(crate) struct OnReplica<'a> {
    /// Address of the replica.
    pub replica: Arc<str>,
    /// The call.
    pub call: Call<'a>,
}

/// Why an attempt on a replica brought no answer.
#[derive(Debug)]
pub(crate) enum AttemptError {
    /// It was never sent (no time left before the deadline): it says nothing about the
    /// replica, and is neither timed nor counted as an attempt.
    NotSent(InferError),
    /// It was sent and failed.
    Failed(InferError),
}

/// Below the attempt timeout (the backend's request): what is sent. Its time is bounded from
/// outside.
pub(crate) struct Sent<'a> {
    /// Address of the replica.
    pub replica: Arc<str>,
    /// The contract's input columns.
    pub inputs: &'a RecordBatch,
    /// What is sent and read back.
    pub contract: &'a Contract,
}

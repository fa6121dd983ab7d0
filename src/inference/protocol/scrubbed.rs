//! The protocol client of a version that sends secrets, wrapped so every error it returns (of
//! a call or a contract check) is scrubbed of them before anything else sees it: one of the two
//! choke points described in [`crate::inference::scrub`].

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::record_batch::RecordBatch;
use futures::FutureExt;
use futures::future::BoxFuture;

use super::{Backend, CallOutput, Contract, ContractProblem, SelectorSyntax};
use crate::inference::error::InferError;
use crate::inference::scrub::SecretScrubber;

/// A protocol client whose errors are scrubbed of the secrets it sends.
pub(crate) struct ScrubbedBackend {
    inner: Arc<dyn Backend>,
    scrubber: SecretScrubber,
}

/// `backend` wrapped so its errors are scrubbed of `scrubber`'s secrets; unchanged when there
/// are none (no cost for versions without secrets).
pub(crate) fn scrubbed(backend: Arc<dyn Backend>, scrubber: SecretScrubber) -> Arc<dyn Backend> {
    if scrubber.is_empty() {
        backend
    } else {
        Arc::new(ScrubbedBackend {
            inner: backend,
            scrubber,
        })
    }
}

impl Backend for ScrubbedBackend {
    fn call<'a>(
        &'a self,
        replica: &'a str,
        inputs: &'a RecordBatch,
        contract: &'a Contract,
    ) -> BoxFuture<'a, Result<CallOutput, InferError>> {
        self.inner
            .call(replica, inputs, contract)
            .map(|result| result.map_err(|e| self.scrubber.scrub_error(e)))
            .boxed()
    }

    fn max_rows_per_request(&self) -> Option<usize> {
        self.inner.max_rows_per_request()
    }

    fn selector_syntax(&self) -> SelectorSyntax {
        self.inner.selector_syntax()
    }

    fn check_contract<'a>(
        &'a self,
        replica: &'a str,
        contract: &'a Contract,
        input_types: &'a [DataType],
    ) -> BoxFuture<'a, Result<(), ContractProblem>> {
        self.inner
            .check_contract(replica, contract, input_types)
            .map(|result| {
                result.map_err(|problem| match problem {
                    ContractProblem::Unreachable(m) => {
                        ContractProblem::Unreachable(self.scrubber.scrub_str(&m).into_owned())
                    }
                    ContractProblem::Mismatch(m) => {
                        ContractProblem::Mismatch(self.scrubber.scrub_str(&m).into_owned())
                    }
                })
            })
            .boxed()
    }

    fn http_client(&self) -> reqwest::Client {
        self.inner.http_client()
    }

    fn secret_scrubber(&self) -> Option<&SecretScrubber> {
        Some(&self.scrubber)
    }
}

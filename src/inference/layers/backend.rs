//! Innermost layer: sends one request through the version's protocol client (HTTP or in
//! process) and checks that the answer has one column per output and one value per row.

use std::sync::Arc;

use super::service::{Sent, Service};
use crate::inference::error::InferError;
use crate::inference::protocol::{Backend, CallOutput, check_shape};

/// The protocol client as a layer.
pub(crate) struct Protocol {
    backend: Arc<dyn Backend>,
}

impl Protocol {
    /// A layer over `backend`.
    pub(crate) fn new(backend: Arc<dyn Backend>) -> Self {
        Protocol { backend }
    }
}

impl<'a> Service<Sent<'a>> for Protocol {
    type Response = CallOutput;
    type Error = InferError;

    async fn call(&self, sent: Sent<'a>) -> Result<CallOutput, InferError> {
        let output = self
            .backend
            .call(&sent.replica, sent.inputs, sent.contract)
            .await?;
        check_shape(&output, sent.contract, sent.inputs.num_rows())?;
        Ok(output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inference::error::ErrorKind;
    use crate::inference::layers::testing::{FakeBackend, contract, rows};

    fn sent<'a>(
        inputs: &'a datafusion::arrow::record_batch::RecordBatch,
        contract: &'a crate::inference::protocol::Contract,
    ) -> Sent<'a> {
        Sent {
            replica: Arc::from("http://r"),
            inputs,
            contract,
        }
    }

    #[tokio::test]
    async fn an_answer_of_the_right_shape_passes_and_the_replica_is_named() {
        let backend = FakeBackend::answering(|_, n| Ok(vec![n as i64; n]));
        let layer = Protocol::new(backend.clone());
        let (inputs, contract) = (rows(3), contract());
        let out = layer.call(sent(&inputs, &contract)).await.unwrap();
        assert_eq!(out.columns[0].len(), 3);
        assert_eq!(backend.replicas(), ["http://r"]);
    }

    #[tokio::test]
    async fn an_answer_with_too_few_rows_breaks_the_contract() {
        let layer = Protocol::new(FakeBackend::answering(|_, _| Ok(vec![1])));
        let (inputs, contract) = (rows(2), contract());
        let err = layer.call(sent(&inputs, &contract)).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Contract, "{err}");
        assert!(err.message.contains("answered 1 rows for 2 sent"), "{err}");
    }

    #[tokio::test]
    async fn a_backend_error_passes_through() {
        let layer = Protocol::new(FakeBackend::answering(|_, _| {
            Err(InferError::new(ErrorKind::Unavailable, "down"))
        }));
        let (inputs, contract) = (rows(1), contract());
        let err = layer.call(sent(&inputs, &contract)).await.unwrap_err();
        assert_eq!(
            (err.kind, err.message.as_str()),
            (ErrorKind::Unavailable, "down")
        );
    }
}

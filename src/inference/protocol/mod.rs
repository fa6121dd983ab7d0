//! Wire protocols of model endpoints. Each turns a batch of input rows (Arrow) into one request
//! and the answer back into one column per declared output, with exactly one value per row:
//! anything else is a contract error.

pub(crate) mod custom_json;
pub(crate) mod http_json;
pub(crate) mod json_values;
pub(crate) mod oip;
pub(crate) mod openai;
pub(crate) mod scrubbed;
pub(crate) mod tf_serving;
pub mod transport;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::record_batch::RecordBatch;
use futures::future::BoxFuture;

use super::error::InferError;
use crate::spec::OutputType;
pub use crate::spec::selector::{Selector, SelectorSyntax};

/// What a pipeline step sends and expects back, independent of the protocol.
#[derive(Debug, Clone)]
pub struct Contract {
    /// Input column names, in order (the columns of the request batch).
    pub inputs: Vec<String>,
    /// Outputs to extract, in order (the columns of the answer).
    pub outputs: Vec<OutputBinding>,
}

/// One output column: where it comes from in the answer and its type.
#[derive(Debug, Clone)]
pub struct OutputBinding {
    /// New column name.
    pub column: String,
    /// Where the value is in the answer.
    pub selector: Selector,
    /// Column type.
    pub data_type: OutputType,
}

/// The answer to one request.
#[derive(Debug, Clone)]
pub struct CallOutput {
    /// One column per contract output, one value per input row.
    pub columns: Vec<ArrayRef>,
    /// Prompt tokens reported by the backend (OpenAI).
    pub prompt_tokens: u64,
    /// Completion tokens reported by the backend (OpenAI).
    pub completion_tokens: u64,
}

impl CallOutput {
    /// An answer without token counts.
    pub fn columns(columns: Vec<ArrayRef>) -> Self {
        CallOutput {
            columns,
            prompt_tokens: 0,
            completion_tokens: 0,
        }
    }
}

/// A protocol client for one model version: sends one request to one replica.
pub trait Backend: Send + Sync {
    /// Sends `inputs` (the contract's input columns) to `replica` and maps the answer.
    fn call<'a>(
        &'a self,
        replica: &'a str,
        inputs: &'a RecordBatch,
        contract: &'a Contract,
    ) -> BoxFuture<'a, Result<CallOutput, InferError>>;

    /// Most rows one request may carry, when the protocol has a limit (chat: one).
    fn max_rows_per_request(&self) -> Option<usize> {
        None
    }

    /// Selector syntax of this protocol.
    fn selector_syntax(&self) -> SelectorSyntax;

    /// Checks the model's declared inputs and outputs against the contract (input column
    /// types in `input_types`), where the protocol can describe its model.
    fn check_contract<'a>(
        &'a self,
        _replica: &'a str,
        _contract: &'a Contract,
        _input_types: &'a [datafusion::arrow::datatypes::DataType],
    ) -> BoxFuture<'a, Result<(), ContractProblem>> {
        Box::pin(async { Ok(()) })
    }

    /// The secrets this client sends to its replicas, when its errors are scrubbed of them
    /// ([`crate::inference::protocol::scrubbed::ScrubbedBackend`]): the gateway scrubs the error answers it
    /// relays from the same replicas with it.
    fn secret_scrubber(&self) -> Option<&crate::inference::scrub::SecretScrubber> {
        None
    }

    /// The HTTP client that reaches this version's replicas (its own when the endpoint has
    /// `tls` settings), for the gateway's pass-through.
    fn http_client(&self) -> reqwest::Client {
        transport::client()
    }
}

/// Why a served model's contract could not be confirmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContractProblem {
    /// The metadata could not be read (the server is down or does not describe models).
    Unreachable(String),
    /// The model declares inputs or outputs that do not fit the pipeline (names both sides).
    Mismatch(String),
}

impl std::fmt::Display for ContractProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ContractProblem::Unreachable(m) | ContractProblem::Mismatch(m) => f.write_str(m),
        }
    }
}

/// Checks that the answer has one column per output and one value per row.
pub fn check_shape(
    output: &CallOutput,
    contract: &Contract,
    rows: usize,
) -> Result<(), InferError> {
    if output.columns.len() != contract.outputs.len() {
        return Err(InferError::contract(format!(
            "expected {} output columns, got {}",
            contract.outputs.len(),
            output.columns.len()
        )));
    }
    for (column, binding) in output.columns.iter().zip(&contract.outputs) {
        if column.len() != rows {
            return Err(InferError::contract(format!(
                "output `{}`: the model answered {} rows for {rows} sent",
                binding.column,
                column.len()
            )));
        }
    }
    Ok(())
}

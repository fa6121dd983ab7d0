//! Test fixtures of the layers: rows, a contract, a scripted protocol client, replicas and
//! metrics.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use datafusion::arrow::array::{ArrayRef, Int64Array};
use datafusion::arrow::record_batch::RecordBatch;
use futures::FutureExt;
use futures::future::BoxFuture;

use super::metrics::VersionMetrics;
use crate::inference::balance::Replica;
use crate::inference::error::InferError;
use crate::inference::protocol::{
    Backend, CallOutput, Contract, OutputBinding, Selector, SelectorSyntax,
};
use crate::inference::types::Answer;
use crate::spec::{EjectionSpec, OutputType};
use crate::telemetry::ModelMetrics;

/// `n` rows of one column `x`.
pub(super) fn rows(n: i64) -> RecordBatch {
    let x = Arc::new(Int64Array::from_iter_values(0..n)) as ArrayRef;
    RecordBatch::try_from_iter(vec![("x", x)]).expect("one column")
}

/// Sends `x`, reads `y`.
pub(super) fn contract() -> Contract {
    Contract {
        inputs: vec!["x".into()],
        outputs: vec![OutputBinding {
            column: "y".into(),
            selector: Selector::Pointer("/y".into()),
            data_type: OutputType::Int64,
        }],
    }
}

/// An answer of model `m`, version `v`, from `replica`.
pub(super) fn answer(replica: &str) -> Answer {
    Answer {
        columns: vec![],
        model: "m".into(),
        version: "v".into(),
        replica: replica.into(),
        latency: Duration::ZERO,
    }
}

/// Fresh metric families (in a registry of their own).
pub(super) fn model_metrics() -> ModelMetrics {
    ModelMetrics::register(&prometheus::Registry::new())
}

/// The metrics of version `v` of model `m`, in `families`.
pub(super) fn metrics_in(families: &ModelMetrics) -> VersionMetrics {
    VersionMetrics::new("m".into(), "v".into(), families.clone())
}

/// A replica at `address` with `max_in_flight` slots.
pub(super) fn replica(address: &str, max_in_flight: usize) -> Arc<Replica> {
    let gauge = prometheus::IntGauge::new("g", "g").expect("valid");
    let counter = prometheus::IntCounter::new("c", "c").expect("valid");
    Arc::new(Replica::new(address, max_in_flight, gauge, counter))
}

/// Ejection after three failures in a row.
pub(super) fn ejection() -> EjectionSpec {
    EjectionSpec {
        consecutive_failures: 3,
        base_time: Duration::from_secs(60),
        max_time: Duration::from_secs(600),
    }
}

type Answering = dyn Fn(&str, usize) -> Result<Vec<i64>, InferError> + Send + Sync;

/// A protocol client answering from a function of (replica, rows), or never.
pub(super) struct FakeBackend {
    answer: Box<Answering>,
    hang: bool,
    replicas: Mutex<Vec<String>>,
}

impl FakeBackend {
    /// Answers `y` values (or an error) computed by `answer`.
    pub(super) fn answering(
        answer: impl Fn(&str, usize) -> Result<Vec<i64>, InferError> + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(FakeBackend {
            answer: Box::new(answer),
            hang: false,
            replicas: Mutex::default(),
        })
    }

    /// Never answers.
    pub(super) fn hanging() -> Arc<Self> {
        Arc::new(FakeBackend {
            hang: true,
            ..Arc::into_inner(Self::answering(|_, _| Ok(vec![]))).expect("one owner")
        })
    }

    /// The replicas called, in order.
    pub(super) fn replicas(&self) -> Vec<String> {
        self.replicas.lock().expect("not poisoned").clone()
    }
}

impl Backend for FakeBackend {
    fn call<'a>(
        &'a self,
        replica: &'a str,
        inputs: &'a RecordBatch,
        _contract: &'a Contract,
    ) -> BoxFuture<'a, Result<CallOutput, InferError>> {
        self.replicas
            .lock()
            .expect("not poisoned")
            .push(replica.to_string());
        let result = (self.answer)(replica, inputs.num_rows());
        async move {
            if self.hang {
                futures::future::pending::<()>().await;
            }
            let values = result?;
            Ok(CallOutput::columns(vec![
                Arc::new(Int64Array::from(values)) as ArrayRef,
            ]))
        }
        .boxed()
    }

    fn selector_syntax(&self) -> SelectorSyntax {
        SelectorSyntax::Pointer
    }
}

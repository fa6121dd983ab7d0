//! Client-side micro-batching for one (pipeline step, model version): rows submitted by
//! concurrent pipeline batches are merged into requests of at most `max_batch_rows`, waiting
//! at most `max_delay` for more, sent concurrently (bounded), and the answers are split back
//! to each submitter. A request the model rejects (4xx) is split in halves until the bad rows
//! are isolated.

use std::sync::Arc;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::record_batch::RecordBatch;
use futures::FutureExt;
use futures::future::{BoxFuture, join_all};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::error::{ErrorKind, InferError};
use super::model::Model;
use super::protocol::Contract;
use super::types::{Answer, BatchingPolicy};

/// The outcome for a contiguous range of submitted rows.
#[derive(Debug, Clone)]
pub(crate) struct Segment {
    /// First row (relative to the submitted batch).
    pub start: usize,
    /// Number of rows.
    pub len: usize,
    /// Answer for exactly these rows, or why they failed.
    pub result: Result<Answer, InferError>,
}

struct Job {
    inputs: RecordBatch,
    reply: oneshot::Sender<Vec<Segment>>,
}

/// Handle to a batching task.
#[derive(Clone)]
pub(crate) struct Batcher {
    tx: mpsc::Sender<Job>,
}

impl Batcher {
    /// Starts the batching task for `version` of `model`. It ends when every handle is dropped.
    pub(crate) fn spawn(
        model: Arc<Model>,
        version: usize,
        contract: Arc<Contract>,
        policy: BatchingPolicy,
    ) -> Self {
        let (tx, rx) = mpsc::channel(64);
        let max_rows = model
            .max_rows_per_request(version)
            .map_or(policy.max_rows, |m| m.min(policy.max_rows))
            .max(1);
        let policy = BatchingPolicy { max_rows, ..policy };
        tokio::spawn(collect(rx, model, version, contract, policy));
        Batcher { tx }
    }

    /// Submits rows; resolves when every row has an outcome. The segments cover every row,
    /// in order.
    pub(crate) async fn submit(&self, inputs: RecordBatch) -> Vec<Segment> {
        let rows = inputs.num_rows();
        let failed = |message: &str| {
            vec![Segment {
                start: 0,
                len: rows,
                result: Err(InferError::new(ErrorKind::Runtime, message)),
            }]
        };
        let (reply, answer) = oneshot::channel();
        if self.tx.send(Job { inputs, reply }).await.is_err() {
            return failed("the model batcher has stopped");
        }
        answer
            .await
            .unwrap_or_else(|_| failed("the model batcher dropped the request"))
    }
}

async fn collect(
    mut rx: mpsc::Receiver<Job>,
    model: Arc<Model>,
    version: usize,
    contract: Arc<Contract>,
    policy: BatchingPolicy,
) {
    let slots = Arc::new(Semaphore::new(policy.max_concurrent.max(1)));
    while let Some(first) = rx.recv().await {
        let mut rows = first.inputs.num_rows();
        let mut jobs = vec![first];
        let until = tokio::time::Instant::now() + policy.max_delay;
        while rows < policy.max_rows {
            let next = if policy.max_delay.is_zero() {
                rx.try_recv().ok()
            } else {
                tokio::time::timeout_at(until, rx.recv())
                    .await
                    .ok()
                    .flatten()
            };
            let Some(job) = next else { break };
            rows += job.inputs.num_rows();
            jobs.push(job);
        }
        tokio::spawn(flush(
            jobs,
            model.clone(),
            version,
            contract.clone(),
            policy.max_rows,
            slots.clone(),
        ));
    }
}

async fn flush(
    jobs: Vec<Job>,
    model: Arc<Model>,
    version: usize,
    contract: Arc<Contract>,
    max_rows: usize,
    slots: Arc<Semaphore>,
) {
    let schema = jobs[0].inputs.schema();
    let combined = match concat_batches(&schema, jobs.iter().map(|j| &j.inputs)) {
        Ok(b) => b,
        Err(e) => {
            for job in jobs {
                let len = job.inputs.num_rows();
                let _ = job.reply.send(vec![Segment {
                    start: 0,
                    len,
                    result: Err(InferError::new(ErrorKind::Runtime, e.to_string())),
                }]);
            }
            return;
        }
    };
    let total = combined.num_rows();
    let chunks = (0..total).step_by(max_rows).map(|start| {
        let len = max_rows.min(total - start);
        let chunk = combined.slice(start, len);
        let (model, contract, slots) = (model.clone(), contract.clone(), slots.clone());
        async move {
            let _slot = slots.acquire_owned().await;
            let mut segments = isolate(model, version, contract, chunk).await;
            segments.iter_mut().for_each(|s| s.start += start);
            segments
        }
    });
    let segments: Vec<Segment> = join_all(chunks).await.into_iter().flatten().collect();
    let mut offset = 0;
    for job in jobs {
        let len = job.inputs.num_rows();
        let _ = job.reply.send(clip(&segments, offset, len));
        offset += len;
    }
}

/// Calls the model; when it blames the rows (4xx, rows it cannot encode), splits the rows in
/// halves and calls again, so only the bad rows fail.
fn isolate(
    model: Arc<Model>,
    version: usize,
    contract: Arc<Contract>,
    inputs: RecordBatch,
) -> BoxFuture<'static, Vec<Segment>> {
    async move {
        let n = inputs.num_rows();
        match model.call(version, &inputs, &contract).await {
            Ok(answer) => vec![Segment {
                start: 0,
                len: n,
                result: Ok(answer),
            }],
            Err(e) if e.may_isolate_rows() && n > 1 => {
                let half = n / 2;
                let (left, right) = futures::join!(
                    isolate(
                        model.clone(),
                        version,
                        contract.clone(),
                        inputs.slice(0, half)
                    ),
                    isolate(model, version, contract, inputs.slice(half, n - half)),
                );
                left.into_iter()
                    .chain(right.into_iter().map(|mut s| {
                        s.start += half;
                        s
                    }))
                    .collect()
            }
            Err(e) => vec![Segment {
                start: 0,
                len: n,
                result: Err(e),
            }],
        }
    }
    .boxed()
}

/// The parts of `segments` (sorted, covering `0..`) that fall in `offset..offset + len`,
/// re-based to 0.
fn clip(segments: &[Segment], offset: usize, len: usize) -> Vec<Segment> {
    let end = offset + len;
    segments
        .iter()
        .filter(|s| s.start < end && s.start + s.len > offset)
        .map(|s| {
            let from = s.start.max(offset);
            let to = (s.start + s.len).min(end);
            let result = match &s.result {
                Ok(answer) => Ok(Answer {
                    columns: answer
                        .columns
                        .iter()
                        .map(|c| -> ArrayRef { c.slice(from - s.start, to - from) })
                        .collect(),
                    ..answer.clone()
                }),
                Err(e) => Err(e.clone()),
            };
            Segment {
                start: from - offset,
                len: to - from,
                result,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{AsArray, Int64Array};
    use datafusion::arrow::datatypes::Int64Type;
    use std::time::Duration;

    fn answer(values: Vec<i64>) -> Answer {
        Answer {
            columns: vec![Arc::new(Int64Array::from(values))],
            model: "m".into(),
            version: "1".into(),
            replica: "r".into(),
            latency: Duration::ZERO,
        }
    }

    #[test]
    fn clip_splits_segments_between_jobs() {
        let segments = vec![
            Segment {
                start: 0,
                len: 4,
                result: Ok(answer(vec![0, 1, 2, 3])),
            },
            Segment {
                start: 4,
                len: 1,
                result: Err(InferError::new(ErrorKind::Rejected, "bad")),
            },
            Segment {
                start: 5,
                len: 3,
                result: Ok(answer(vec![5, 6, 7])),
            },
        ];
        let second = clip(&segments, 3, 4);
        assert_eq!(second.len(), 3);
        assert_eq!((second[0].start, second[0].len), (0, 1));
        let first = second[0].result.as_ref().unwrap();
        assert_eq!(first.columns[0].as_primitive::<Int64Type>().value(0), 3);
        assert!(second[1].result.is_err());
        assert_eq!((second[2].start, second[2].len), (2, 2));
        let last = second[2].result.as_ref().unwrap();
        assert_eq!(
            last.columns[0].as_primitive::<Int64Type>().values(),
            &[5, 6]
        );
    }
}

//! Where one unit's rows go while it runs: Parquet files under temporary names (renamed into
//! place when the unit completes), or the pipeline's sinks holding the unit's ack (complete
//! once every message is confirmed); and its dead letters either way.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use tokio::sync::oneshot;

use super::write::{self, DEAD_LETTER_DIR, DeadRow, UnitFile};
use super::{Context, Destination, Unit, UnitError};
use crate::ack::{Ack, AckReceiver, AckStatus};
use crate::batch::{Position, RawRecord};
use crate::sink::{DeadLetterRecord, PayloadColumns, Sink, SinkInput};

/// A unit's destination: files under temporary names, or sinks holding the unit's ack.
pub(super) enum UnitSink {
    Files {
        names: Vec<String>,
        outputs: Vec<UnitFile>,
        /// The columns each output's files hold.
        payloads: Vec<PayloadColumns>,
        dead: Box<UnitFile>,
    },
    Sinks {
        names: Vec<String>,
        outputs: Vec<Arc<dyn Sink>>,
        dead_letter: Option<Arc<dyn Sink>>,
        dead_letter_drop: bool,
        undeliverable_fails: bool,
        pipeline: Arc<str>,
        ack: Ack,
        resolved: oneshot::Receiver<AckStatus>,
        rows: Vec<u64>,
    },
}

impl UnitSink {
    pub(super) fn open(context: &Context, unit: &Unit) -> Result<Self, UnitError> {
        let compiled = &context.compiled;
        let names: Vec<String> = compiled.outputs.iter().map(|o| o.name.clone()).collect();
        Ok(match &context.destination {
            Destination::Files { dir } => UnitSink::Files {
                outputs: compiled
                    .outputs
                    .iter()
                    .map(|o| {
                        let schema = o.payload.schema(&compiled.output_schema())?;
                        Ok(UnitFile::new(&dir.join(&o.name), &unit.id, schema))
                    })
                    .collect::<Result<_, UnitError>>()?,
                payloads: compiled.outputs.iter().map(|o| o.payload.clone()).collect(),
                dead: Box::new(UnitFile::new(
                    &dir.join(DEAD_LETTER_DIR),
                    &unit.id,
                    write::dead_letter_schema(),
                )),
                names,
            },
            Destination::Sinks {
                outputs,
                dead_letter,
                drop_failures,
                undeliverable_fails,
                pipeline,
            } => {
                let (tx, rx) = oneshot::channel();
                UnitSink::Sinks {
                    dead_letter_drop: *drop_failures,
                    undeliverable_fails: *undeliverable_fails,
                    pipeline: pipeline.clone(),
                    rows: vec![0; outputs.len()],
                    names,
                    outputs: outputs.clone(),
                    dead_letter: dead_letter.clone(),
                    ack: Ack::new(0, Arc::new(UnitAck(std::sync::Mutex::new(Some(tx))))),
                    resolved: rx,
                }
            }
        })
    }

    pub(super) async fn write(
        &mut self,
        output: usize,
        batch: RecordBatch,
    ) -> Result<(), UnitError> {
        match self {
            UnitSink::Files {
                outputs, payloads, ..
            } => Ok(outputs[output].write(&payloads[output].apply(&batch)?)?),
            UnitSink::Sinks {
                outputs, ack, rows, ..
            } => {
                rows[output] += batch.num_rows() as u64;
                outputs[output]
                    .send(
                        SinkInput::Rows {
                            batch,
                            origins: None,
                        },
                        ack,
                    )
                    .await
                    .map_err(UnitError::from)
                    .and_then(|rejected| match rejected.first() {
                        // The unit fails (and is retried by `--resume`) rather than losing rows.
                        Some((_, _, why)) => Err(UnitError::Rejected {
                            rows: rejected.len(),
                            output,
                            why: why.clone(),
                        }),
                        None => Ok(()),
                    })
            }
        }
    }

    pub(super) async fn dead_letters(
        &mut self,
        file: &str,
        rows: Vec<DeadRow>,
    ) -> Result<(), UnitError> {
        match self {
            UnitSink::Files { dead, .. } => {
                Ok(dead.write(&write::dead_letter_batch(file, &rows)?)?)
            }
            UnitSink::Sinks {
                dead_letter,
                dead_letter_drop,
                undeliverable_fails,
                pipeline,
                ack,
                ..
            } => {
                if *dead_letter_drop {
                    return Ok(());
                }
                let Some(sink) = dead_letter else {
                    return Err(UnitError::NoDeadLetterSink(rows.len()));
                };
                let topic: Arc<str> = Arc::from(file);
                let letters = rows
                    .into_iter()
                    .map(|r| DeadLetterRecord {
                        record: RawRecord {
                            key: None,
                            payload: r.record,
                            headers: vec![],
                            timestamp_ms: None,
                            position: Position {
                                topic: topic.clone(),
                                partition: 0,
                                offset: r.row,
                            },
                        },
                        pipeline: pipeline.clone(),
                        failure: r.failure,
                    })
                    .collect();
                let undeliverable = sink.send(SinkInput::DeadLetters(letters), ack).await?;
                for (_, _, why) in &undeliverable {
                    tracing::error!(%file, error = %why, "the dead-letter sink refused a row even in bounded form");
                }
                match undeliverable.first() {
                    Some((_, _, why)) if *undeliverable_fails => Err(UnitError::LettersRefused {
                        letters: undeliverable.len(),
                        why: why.clone(),
                    }),
                    _ => Ok(()),
                }
            }
        }
    }

    /// Completes the unit: renames files into place, or waits until every message the unit
    /// sent is confirmed.
    pub(super) async fn finish(self) -> Result<BTreeMap<String, u64>, UnitError> {
        match self {
            UnitSink::Files {
                names,
                outputs,
                dead,
                ..
            } => {
                let mut rows = BTreeMap::new();
                for (name, file) in names.into_iter().zip(outputs) {
                    rows.insert(name, file.finish()?);
                }
                (*dead).finish()?;
                Ok(rows)
            }
            UnitSink::Sinks {
                names,
                ack,
                resolved,
                rows,
                ..
            } => {
                drop(ack);
                match resolved.await {
                    Ok(AckStatus::Delivered) => Ok(names.into_iter().zip(rows).collect()),
                    Ok(status) => Err(UnitError::NotConfirmed(status)),
                    Err(_) => Err(UnitError::AckLost),
                }
            }
        }
    }

    pub(super) fn abort(self) {
        match self {
            UnitSink::Files { outputs, dead, .. } => {
                outputs.into_iter().for_each(UnitFile::abort);
                (*dead).abort();
            }
            UnitSink::Sinks { ack, .. } => ack.record(AckStatus::Errored),
        }
    }
}

/// Hands a unit's final acknowledgement status to the waiting unit.
struct UnitAck(std::sync::Mutex<Option<oneshot::Sender<AckStatus>>>);

impl AckReceiver for UnitAck {
    fn resolved(&self, _token: u64, status: AckStatus) {
        if let Some(tx) = self.0.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = tx.send(status);
        }
    }
}

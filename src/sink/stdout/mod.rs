//! Standard-output sink: JSON lines. Writes are serialised so lines of concurrent batches never
//! interleave, and a blocked pipe blocks the pipeline (backpressure), never memory.

pub(crate) mod spec;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

use crate::ack::Ack;
use crate::sink::{PayloadColumns, Sink, SinkError, SinkInput, json_lines};

/// Writes rows as JSON lines to standard output.
pub(crate) struct StdoutSink {
    out: Mutex<tokio::io::Stdout>,
    payload: PayloadColumns,
}

impl StdoutSink {
    /// A sink on the process's standard output.
    pub(crate) fn new() -> Self {
        StdoutSink {
            out: Mutex::new(tokio::io::stdout()),
            payload: PayloadColumns::all(),
        }
    }

    /// Writes only the `payload` columns of each row.
    pub(crate) fn with_payload(mut self, payload: PayloadColumns) -> Self {
        self.payload = payload;
        self
    }
}

impl Default for StdoutSink {
    fn default() -> Self {
        Self::new()
    }
}

/// Renders sink input as newline-terminated JSON lines (the `payload` columns of rows), and
/// the rows that could not be encoded.
pub(crate) fn render(
    input: &SinkInput,
    payload: &PayloadColumns,
) -> Result<(Vec<u8>, crate::sink::Rejected), SinkError> {
    match input {
        SinkInput::Rows { batch, .. } => json_lines(batch, payload),
        SinkInput::DeadLetters(records) => Ok((
            records.iter().flat_map(|r| r.to_json_line()).collect(),
            Vec::new(),
        )),
    }
}

impl Sink for StdoutSink {
    fn send<'a>(
        &'a self,
        input: SinkInput,
        ack: &'a Ack,
    ) -> BoxFuture<'a, Result<crate::sink::Rejected, SinkError>> {
        async move {
            let receipt = ack.receipt();
            let (bytes, rejected) = render(&input, &self.payload)?;
            let mut out = self.out.lock().await;
            out.write_all(&bytes).await?;
            out.flush().await?;
            receipt.delivered();
            Ok(rejected)
        }
        .boxed()
    }

    fn flush(&self, _timeout: std::time::Duration) -> BoxFuture<'_, Result<(), SinkError>> {
        async move { Ok(self.out.lock().await.flush().await?) }.boxed()
    }
}

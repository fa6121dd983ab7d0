//! JSON-lines file sink. Appends; a batch is delivered once written and flushed to the OS (and
//! synced to disk with `fsync: true`).

pub(crate) mod spec;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

use crate::ack::Ack;
use crate::sink::stdout::render;
use crate::sink::{PayloadColumns, Sink, SinkError, SinkInput};
use crate::spec::FileSinkSpec;

/// Appends JSON lines to a file.
pub(crate) struct FileSink {
    file: Mutex<tokio::fs::File>,
    fsync: bool,
    payload: PayloadColumns,
}

impl FileSink {
    /// Opens (creating if needed) the file for appending.
    pub(crate) fn new(spec: &FileSinkSpec) -> Result<Self, SinkError> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.path)
            .map_err(|e| SinkError::Build {
                kind: "file",
                message: format!("{}: {e}", spec.path),
            })?;
        Ok(FileSink {
            file: Mutex::new(tokio::fs::File::from_std(file)),
            fsync: spec.fsync,
            payload: PayloadColumns::all(),
        })
    }

    /// Writes only the `payload` columns of each row.
    pub(crate) fn with_payload(mut self, payload: PayloadColumns) -> Self {
        self.payload = payload;
        self
    }
}

impl Sink for FileSink {
    fn send<'a>(
        &'a self,
        input: SinkInput,
        ack: &'a Ack,
    ) -> BoxFuture<'a, Result<crate::sink::Rejected, SinkError>> {
        async move {
            let receipt = ack.receipt();
            let (bytes, rejected) = render(&input, &self.payload)?;
            let mut file = self.file.lock().await;
            file.write_all(&bytes).await?;
            file.flush().await?;
            if self.fsync {
                file.sync_data().await?;
            }
            receipt.delivered();
            Ok(rejected)
        }
        .boxed()
    }

    fn flush(&self, _timeout: std::time::Duration) -> BoxFuture<'_, Result<(), SinkError>> {
        async move { Ok(self.file.lock().await.flush().await?) }.boxed()
    }
}

//! Output of a file-mode backfill: one Parquet dataset per output (and one of dead letters),
//! one file per unit, zstd-compressed, written under a temporary name and renamed into place
//! once complete, so a crash never leaves a partial file under a final name and redoing a unit
//! replaces its file instead of duplicating rows.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{ArrayRef, Int64Builder, RecordBatch, StringBuilder, UInt32Builder};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;

/// Folder of the dead-letter dataset inside the output directory.
pub const DEAD_LETTER_DIR: &str = "_dead_letter";

/// Rows per Parquet row group in output files.
const OUTPUT_ROW_GROUP: usize = 128 * 1024;

/// Writes one unit's rows of one output.
pub struct UnitFile {
    tmp: PathBuf,
    path: PathBuf,
    schema: SchemaRef,
    writer: Option<ArrowWriter<File>>,
    rows: u64,
}

impl UnitFile {
    /// A writer of `<dir>/part-<unit>.parquet`; nothing is created before the first row.
    pub fn new(dir: &Path, unit: &str, schema: SchemaRef) -> Self {
        UnitFile {
            tmp: dir.join(format!(".part-{unit}.parquet.tmp")),
            path: dir.join(format!("part-{unit}.parquet")),
            schema,
            writer: None,
            rows: 0,
        }
    }

    /// Appends rows.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), String> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if self.writer.is_none() {
            if let Some(dir) = self.tmp.parent() {
                std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            }
            let file =
                File::create(&self.tmp).map_err(|e| format!("{}: {e}", self.tmp.display()))?;
            let props = WriterProperties::builder()
                .set_compression(Compression::ZSTD(ZstdLevel::default()))
                // Scored rows carry unique ids: dictionary-encoding them is wasted work before
                // the writer falls back (measured: a fifth of the backfill's CPU); zstd
                // compresses repeated values anyway.
                .set_dictionary_enabled(false)
                .set_max_row_group_row_count(Some(OUTPUT_ROW_GROUP))
                .build();
            self.writer = Some(
                ArrowWriter::try_new(file, self.schema.clone(), Some(props))
                    .map_err(|e| e.to_string())?,
            );
        }
        let writer = self.writer.as_mut().expect("created above");
        writer.write(batch).map_err(|e| e.to_string())?;
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Closes, syncs and renames the file into place; returns the rows written. A unit with
    /// no rows leaves no file (and removes one a previous attempt may have left).
    pub fn finish(mut self) -> Result<u64, String> {
        let Some(writer) = self.writer.take() else {
            let _ = std::fs::remove_file(&self.path);
            return Ok(0);
        };
        let file = writer.into_inner().map_err(|e| e.to_string())?;
        file.sync_all().map_err(|e| e.to_string())?;
        std::fs::rename(&self.tmp, &self.path)
            .map_err(|e| format!("renaming {}: {e}", self.tmp.display()))?;
        if let Some(dir) = self.path.parent()
            && let Ok(d) = File::open(dir)
        {
            let _ = d.sync_all();
        }
        Ok(self.rows)
    }

    /// Drops what was written (the unit will be redone).
    pub fn abort(mut self) {
        self.writer.take();
        let _ = std::fs::remove_file(&self.tmp);
    }
}

/// Schema of dead-letter files.
pub fn dead_letter_schema() -> SchemaRef {
    static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
        Arc::new(Schema::new(vec![
            Field::new("source_file", DataType::Utf8, false),
            Field::new("source_row", DataType::Int64, false),
            Field::new("stage", DataType::Utf8, false),
            Field::new("error_class", DataType::Utf8, false),
            Field::new("error", DataType::Utf8, false),
            Field::new("model", DataType::Utf8, true),
            Field::new("model_version", DataType::Utf8, true),
            Field::new("attempts", DataType::UInt32, true),
            Field::new("record", DataType::Utf8, false),
        ]))
    });
    SCHEMA.clone()
}

/// One dead-lettered row.
pub struct DeadRow {
    /// Index of the row in its file.
    pub row: i64,
    /// Stage that failed.
    pub stage: &'static str,
    /// Error class.
    pub class: &'static str,
    /// Error message.
    pub message: String,
    /// Model, version and attempts, for stage `model`.
    pub model: Option<crate::sink::ModelContext>,
    /// The row as read, as JSON.
    pub record: Vec<u8>,
}

/// A batch of the dead-letter schema.
pub fn dead_letter_batch(file: &str, rows: &[DeadRow]) -> Result<RecordBatch, String> {
    let n = rows.len();
    let mut source = StringBuilder::with_capacity(n, n * file.len());
    let mut row = Int64Builder::with_capacity(n);
    let mut stage = StringBuilder::new();
    let mut class = StringBuilder::new();
    let mut error = StringBuilder::new();
    let mut model = StringBuilder::new();
    let mut version = StringBuilder::new();
    let mut attempts = UInt32Builder::with_capacity(n);
    let mut record = StringBuilder::new();
    for r in rows {
        source.append_value(file);
        row.append_value(r.row);
        stage.append_value(r.stage);
        class.append_value(r.class);
        error.append_value(&r.message);
        model.append_option(r.model.as_ref().map(|m| &*m.model));
        version.append_option(r.model.as_ref().map(|m| &*m.version));
        attempts.append_option(r.model.as_ref().map(|m| m.attempts));
        record.append_value(String::from_utf8_lossy(&r.record));
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(source.finish()),
        Arc::new(row.finish()),
        Arc::new(stage.finish()),
        Arc::new(class.finish()),
        Arc::new(error.finish()),
        Arc::new(model.finish()),
        Arc::new(version.finish()),
        Arc::new(attempts.finish()),
        Arc::new(record.finish()),
    ];
    RecordBatch::try_new(dead_letter_schema(), columns).map_err(|e| e.to_string())
}

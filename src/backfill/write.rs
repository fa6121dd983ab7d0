//! Output of a file-mode backfill: one Parquet dataset per output (and one of dead letters),
//! one file per unit, zstd-compressed, written under a temporary name and renamed into place
//! once complete, so a crash never leaves a partial file under a final name and redoing a unit
//! replaces its file instead of duplicating rows.

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Int64Builder, RecordBatch, StringBuilder, UInt32Builder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::parquet::schema::types::ColumnPath;

/// Why a unit's output file cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// A folder or file cannot be created.
    #[error("{}: {source}", path.display())]
    Create {
        /// The folder or file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The temporary file cannot be renamed into place.
    #[error("renaming {}: {source}", path.display())]
    Rename {
        /// The temporary file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file cannot be synced.
    #[error(transparent)]
    Sync(#[from] std::io::Error),
    /// The Parquet writer failed.
    #[error(transparent)]
    Parquet(#[from] datafusion::parquet::errors::ParquetError),
    /// The dead-letter batch cannot be built.
    #[error(transparent)]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
}

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
    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), WriteError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if self.writer.is_none() {
            if let Some(dir) = self.tmp.parent() {
                std::fs::create_dir_all(dir).map_err(|source| WriteError::Create {
                    path: dir.to_path_buf(),
                    source,
                })?;
            }
            let file = File::create(&self.tmp).map_err(|source| WriteError::Create {
                path: self.tmp.clone(),
                source,
            })?;
            let mut props = WriterProperties::builder()
                .set_compression(Compression::ZSTD(ZstdLevel::default()))
                // Scored rows carry unique ids: dictionary-encoding them is wasted work before
                // the writer falls back (measured: a fifth of the backfill's CPU). Columns whose
                // first rows repeat (categories, flags, lineage) get a dictionary: the fraud
                // backfill's output is 8% smaller for the same CPU.
                .set_dictionary_enabled(false)
                .set_max_row_group_row_count(Some(OUTPUT_ROW_GROUP));
            for name in low_cardinality_columns(batch) {
                props = props.set_column_dictionary_enabled(ColumnPath::from(name), true);
            }
            let props = props.build();
            self.writer = Some(ArrowWriter::try_new(
                file,
                self.schema.clone(),
                Some(props),
            )?);
        }
        let writer = self.writer.as_mut().expect("created above");
        writer.write(batch)?;
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Closes, syncs and renames the file into place; returns the rows written. A unit with
    /// no rows leaves no file (and removes one a previous attempt may have left).
    pub fn finish(mut self) -> Result<u64, WriteError> {
        let Some(writer) = self.writer.take() else {
            let _ = std::fs::remove_file(&self.path);
            return Ok(0);
        };
        let file = writer.into_inner()?;
        file.sync_all()?;
        std::fs::rename(&self.tmp, &self.path).map_err(|source| WriteError::Rename {
            path: self.tmp.clone(),
            source,
        })?;
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

/// Rows of a first batch looked at to judge a column's cardinality.
const CARDINALITY_SAMPLE_ROWS: usize = 4096;
/// Fewest rows a first batch needs for its columns to be judged at all.
const MIN_CARDINALITY_SAMPLE_ROWS: usize = 64;

/// Top-level columns whose values repeat enough in `batch` (at most one distinct value in
/// eight rows of a sample) that dictionary encoding pays: constants such as lineage columns,
/// categories, flags. Unique ids and measurements are left out, so the writer never builds a
/// dictionary only to abandon it. Only flat strings and fixed-width primitives are judged.
fn low_cardinality_columns(batch: &RecordBatch) -> Vec<String> {
    let rows = batch.num_rows().min(CARDINALITY_SAMPLE_ROWS);
    // A first batch of a few rows (a dead-letter file often starts with one) says nothing:
    // every column would look repetitive.
    if rows < MIN_CARDINALITY_SAMPLE_ROWS {
        return Vec::new();
    }
    let limit = rows / 8;
    batch
        .schema()
        .fields()
        .iter()
        .zip(batch.columns())
        .filter(|(_, column)| at_most_distinct(column.slice(0, rows).as_ref(), limit))
        .map(|(field, _)| field.name().clone())
        .collect()
}

/// Whether the non-null values of `column` take at most `limit` distinct values.
fn at_most_distinct(column: &dyn Array, limit: usize) -> bool {
    let mut seen: HashSet<&[u8]> = HashSet::with_capacity(limit + 1);
    let data_type = column.data_type();
    match data_type {
        DataType::Utf8 => {
            for value in column.as_string::<i32>().iter().flatten() {
                if seen.insert(value.as_bytes()) && seen.len() > limit {
                    return false;
                }
            }
            true
        }
        DataType::Utf8View => {
            for value in column.as_string_view().iter().flatten() {
                if seen.insert(value.as_bytes()) && seen.len() > limit {
                    return false;
                }
            }
            true
        }
        DataType::LargeUtf8 => {
            for value in column.as_string::<i64>().iter().flatten() {
                if seen.insert(value.as_bytes()) && seen.len() > limit {
                    return false;
                }
            }
            true
        }
        _ if data_type.is_primitive() => {
            let Some(width) = data_type.primitive_width() else {
                return false;
            };
            let data = column.to_data();
            let Some(values) = data.buffers().first() else {
                return false;
            };
            let bytes = &values.as_slice()[data.offset() * width..];
            for (i, value) in bytes.chunks_exact(width).take(data.len()).enumerate() {
                if data.is_valid(i) && seen.insert(value) && seen.len() > limit {
                    return false;
                }
            }
            true
        }
        _ => false,
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
    /// Why it failed.
    pub failure: crate::batch::Failure,
    /// The row as read, as JSON.
    pub record: Vec<u8>,
}

/// A batch of the dead-letter schema.
pub fn dead_letter_batch(file: &str, rows: &[DeadRow]) -> Result<RecordBatch, WriteError> {
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
        let f = &r.failure;
        source.append_value(file);
        row.append_value(r.row);
        stage.append_value(f.stage.as_str());
        class.append_value(f.class.as_str());
        error.append_value(&f.message);
        model.append_option(f.model.as_ref().map(|m| &*m.model));
        version.append_option(f.model.as_ref().map(|m| &*m.version));
        attempts.append_option(f.model.as_ref().map(|m| m.attempts));
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
    Ok(RecordBatch::try_new(dead_letter_schema(), columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Float32Array, StringArray};
    use datafusion::parquet::basic::Encoding;
    use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};

    /// 1,000 rows: a unique id, a constant, a 0/1 flag (with nulls) and a unique measurement.
    fn sample() -> RecordBatch {
        let n = 1000;
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("model", DataType::Utf8, false),
            Field::new("flag", DataType::Float32, true),
            Field::new("score", DataType::Float32, false),
        ]));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(
                (0..n).map(|i| format!("tx-{i}")),
            )),
            Arc::new(StringArray::from_iter_values((0..n).map(|_| "fraud"))),
            Arc::new(Float32Array::from_iter(
                (0..n).map(|i| (i % 7 != 0).then_some((i % 2) as f32)),
            )),
            Arc::new(Float32Array::from_iter_values(
                (0..n).map(|i| i as f32 / 3.0),
            )),
        ];
        RecordBatch::try_new(schema, columns).unwrap()
    }

    #[test]
    fn repeating_columns_are_chosen_for_dictionaries() {
        assert_eq!(low_cardinality_columns(&sample()), ["model", "flag"]);
        // A sliced batch is judged on its own rows.
        let tail = sample().slice(900, 100);
        assert_eq!(low_cardinality_columns(&tail), ["model", "flag"]);
        // Too few rows to judge: no dictionaries, as for a dead-letter file's first row.
        assert!(low_cardinality_columns(&sample().slice(0, 1)).is_empty());
        // Unique values, then a constant run: only a slice of the run repeats.
        let values = Float32Array::from_iter_values((0..1000).map(|i| i.min(500) as f32));
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Float32, false)]));
        let batch = RecordBatch::try_new(schema, vec![Arc::new(values)]).unwrap();
        assert!(low_cardinality_columns(&batch).is_empty());
        assert_eq!(low_cardinality_columns(&batch.slice(500, 500)), ["v"]);
    }

    #[test]
    fn written_files_dictionary_encode_only_the_repeating_columns() {
        let dir = tempfile::tempdir().unwrap();
        let batch = sample();
        let mut file = UnitFile::new(dir.path(), "u0", batch.schema());
        file.write(&batch).unwrap();
        assert_eq!(file.finish().unwrap(), 1000);
        let reader =
            SerializedFileReader::new(File::open(dir.path().join("part-u0.parquet")).unwrap())
                .unwrap();
        let group = reader.metadata().row_group(0);
        let dictionary = |i: usize| {
            group
                .column(i)
                .encodings()
                .any(|e| e == Encoding::RLE_DICTIONARY || e == Encoding::PLAIN_DICTIONARY)
        };
        assert_eq!(
            (0..4).map(dictionary).collect::<Vec<_>>(),
            [false, true, true, false]
        );
    }
}

//! Synthetic transaction Parquet files for trying backfills and benchmarking them: the demo's
//! transactions (schemas/transaction.avsc), zstd-compressed, in row groups of a chosen size.

use std::fs::File;
use std::path::{Path, PathBuf};

use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;
use rand::SeedableRng;
use rand::rngs::SmallRng;

use crate::batch::{Position, RawRecord};
use crate::codec::json::JsonDecoder;

/// Why the files cannot be generated.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// The folder or a file cannot be created.
    #[error("{}: {source}", path.display())]
    Create {
        /// The folder or file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The demo schema does not load.
    #[error(transparent)]
    Schema(#[from] crate::codec::schema::SchemaError),
    /// The rows cannot be decoded or projected.
    #[error(transparent)]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
    /// The Parquet writer failed.
    #[error(transparent)]
    Parquet(#[from] datafusion::parquet::errors::ParquetError),
}

/// Writes `files` files of `rows_per_file` transactions into `dir`, `row_group_rows` per row
/// group; transaction ids continue across files. Returns the files.
pub fn generate(
    dir: &Path,
    files: usize,
    rows_per_file: u64,
    row_group_rows: usize,
    seed: u64,
) -> Result<Vec<PathBuf>, GenerateError> {
    std::fs::create_dir_all(dir).map_err(|source| GenerateError::Create {
        path: dir.to_path_buf(),
        source,
    })?;
    let fields = crate::codec::schema::avro::avro_to_fields(
        crate::demo::DEMO_SCHEMA,
        Path::new("schemas/transaction.avsc"),
    )?;
    let schema = std::sync::Arc::new(datafusion::arrow::datatypes::Schema::new(fields));
    let decoder = JsonDecoder::try_new(schema.clone())?;
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut written = Vec::new();
    let mut id = 0u64;
    let chunk = 8192u64;
    for f in 0..files {
        let path = dir.join(format!("transactions-{f:05}.parquet"));
        let file = File::create(&path).map_err(|source| GenerateError::Create {
            path: path.clone(),
            source,
        })?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .set_max_row_group_row_count(Some(row_group_rows.max(1)))
            .build();
        let mut writer = ArrowWriter::try_new(file, schema.clone(), Some(props))?;
        let mut left = rows_per_file;
        while left > 0 {
            let n = left.min(chunk);
            let records: Vec<RawRecord> = (0..n)
                .map(|i| RawRecord {
                    key: None,
                    payload: crate::testing::generator::transaction(&mut rng, id + i),
                    headers: vec![],
                    timestamp_ms: None,
                    position: Position {
                        topic: "generate".into(),
                        partition: 0,
                        offset: (id + i) as i64,
                    },
                })
                .collect();
            id += n;
            left -= n;
            let decoded = decoder.decode(&records);
            let record_columns: Vec<usize> = (0..schema.fields().len()).collect();
            let batch = decoded.batch.project(&record_columns)?;
            writer.write(&batch)?;
        }
        writer.close()?;
        written.push(path);
    }
    Ok(written)
}

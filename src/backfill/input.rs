//! Planning a backfill's input: expand globs, read each file's Parquet footer, check its
//! columns against the pipeline's record schema, and cut it into units of whole row groups.
//! A file that cannot be used is reported with its reason and skipped.

use std::fs::File;
use std::path::{Path, PathBuf};

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::errors::ParquetError;

/// Why the input patterns cannot be expanded.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// A pattern that is not a valid glob.
    #[error("invalid pattern {pattern:?}: {source}")]
    Pattern {
        /// The pattern.
        pattern: String,
        /// Why it is invalid.
        #[source]
        source: glob::PatternError,
    },
    /// A path the pattern matched cannot be read.
    #[error("{pattern}: {source}")]
    Glob {
        /// The pattern.
        pattern: String,
        /// The unreadable path.
        #[source]
        source: glob::GlobError,
    },
    /// A pattern that matches no file.
    #[error("{0:?} matches no file")]
    NoMatch(String),
}

/// Why an input file is skipped.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file cannot be opened.
    #[error("cannot open: {0}")]
    Open(#[source] std::io::Error),
    /// The file is not Parquet, or its footer is broken.
    #[error("not a readable Parquet file: {0}")]
    NotParquet(#[source] ParquetError),
    /// Its columns do not fit the pipeline's record schema.
    #[error(transparent)]
    Schema(#[from] SchemaMismatch),
    /// It has no rows.
    #[error("empty: no rows")]
    Empty,
}

/// One way a file's column does not fit the pipeline's record schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ColumnProblem {
    /// A non-nullable record column the file does not have.
    #[error("column `{0}` is missing")]
    Missing(String),
    /// A column whose type does not cast to the record's.
    #[error(
        "column `{column}` is {file_type} in the file but {record_type} in the pipeline's schema"
    )]
    Type {
        /// The column.
        column: String,
        /// Its type in the file.
        file_type: DataType,
        /// Its type in the record schema.
        record_type: DataType,
    },
}

/// Every way a file's columns do not fit the pipeline's record schema (at least one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "schema mismatch: {}",
    .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
)]
pub struct SchemaMismatch(pub Vec<ColumnProblem>);

/// A file that is skipped, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BadFile {
    /// The file.
    pub file: String,
    /// Why it is skipped (or where it failed).
    pub reason: String,
}

/// A piece of work: consecutive row groups of one file, written as one output file per output.
#[derive(Debug, Clone)]
pub struct Unit {
    /// Stable id, used in output file names and the progress file.
    pub id: String,
    /// The input file.
    pub file: PathBuf,
    /// Row groups of the file in this unit.
    pub row_groups: Vec<usize>,
    /// Rows in the unit.
    pub rows: u64,
    /// Index in the file of the unit's first row.
    pub first_row: i64,
    /// Rows of each row group, in order (to know a row's group while reading).
    pub group_rows: Vec<u64>,
}

/// The planned input.
#[derive(Debug, Default)]
pub struct InputPlan {
    /// Files that will be read.
    pub files: Vec<PathBuf>,
    /// Units, in file order.
    pub units: Vec<Unit>,
    /// Files skipped, with reasons.
    pub bad_files: Vec<BadFile>,
    /// Rows in all units.
    pub total_rows: u64,
}

/// Expands `patterns` (paths or globs) into sorted, de-duplicated files.
pub fn expand(patterns: &[String]) -> Result<Vec<PathBuf>, InputError> {
    let mut files = Vec::new();
    for pattern in patterns {
        let paths = glob::glob(pattern).map_err(|source| InputError::Pattern {
            pattern: pattern.clone(),
            source,
        })?;
        let before = files.len();
        for path in paths {
            let path = path.map_err(|source| InputError::Glob {
                pattern: pattern.clone(),
                source,
            })?;
            if path.is_file() {
                files.push(path);
            }
        }
        if files.len() == before {
            return Err(InputError::NoMatch(pattern.clone()));
        }
    }
    // The same file named twice (a second pattern, `./`, a symlink) is read once.
    let mut seen = std::collections::HashSet::new();
    files.retain(|f| seen.insert(std::fs::canonicalize(f).unwrap_or_else(|_| f.clone())));
    files.sort();
    Ok(files)
}

/// Reads every file's footer and cuts it into units of at most `unit_rows` rows (whole row
/// groups; a row group larger than that is a unit of its own).
pub fn plan(files: &[PathBuf], record: &SchemaRef, unit_rows: u64) -> InputPlan {
    let mut out = InputPlan::default();
    for file in files {
        match plan_file(file, record, unit_rows) {
            Ok(units) => {
                out.total_rows += units.iter().map(|u| u.rows).sum::<u64>();
                out.units.extend(units);
                out.files.push(file.clone());
            }
            Err(reason) => out.bad_files.push(BadFile {
                file: file.display().to_string(),
                reason: reason.to_string(),
            }),
        }
    }
    out
}

fn plan_file(file: &Path, record: &SchemaRef, unit_rows: u64) -> Result<Vec<Unit>, FileError> {
    let handle = File::open(file).map_err(FileError::Open)?;
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(handle).map_err(FileError::NotParquet)?;
    check_columns(builder.schema(), record)?;
    let metadata = builder.metadata();
    let groups: Vec<u64> = metadata
        .row_groups()
        .iter()
        .map(|g| g.num_rows().max(0) as u64)
        .collect();
    if groups.iter().sum::<u64>() == 0 {
        return Err(FileError::Empty);
    }
    let stem = unit_prefix(file);
    let mut units = Vec::new();
    let mut first_row = 0i64;
    let mut current: Vec<usize> = Vec::new();
    let mut rows = 0u64;
    let mut unit_start = 0i64;
    for (g, n) in groups.iter().enumerate() {
        if !current.is_empty() && rows + n > unit_rows {
            units.push(unit(&stem, file, &current, rows, unit_start, &groups));
            current.clear();
            rows = 0;
            unit_start = first_row;
        }
        current.push(g);
        rows += n;
        first_row += *n as i64;
    }
    if !current.is_empty() {
        units.push(unit(&stem, file, &current, rows, unit_start, &groups));
    }
    Ok(units)
}

fn unit(stem: &str, file: &Path, groups: &[usize], rows: u64, first: i64, all: &[u64]) -> Unit {
    let (a, b) = (groups[0], groups[groups.len() - 1]);
    Unit {
        id: format!("{stem}-rg{a:05}-{b:05}"),
        file: file.to_path_buf(),
        row_groups: groups.to_vec(),
        rows,
        first_row: first,
        group_rows: groups.iter().map(|g| all[*g]).collect(),
    }
}

/// A file-name-safe prefix unique to `file`: its stem and a 64-bit hash of its canonical path
/// (unit ids name output files, so two files must never share one).
fn unit_prefix(file: &Path) -> String {
    let stem: String = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(60)
        .collect();
    let full = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in full.to_string_lossy().bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{stem}-{h:016x}")
}

/// Every non-nullable record column must be in the file, with a type that casts to the
/// record's; nullable ones may be missing (they read as nulls).
pub fn check_columns(file: &SchemaRef, record: &SchemaRef) -> Result<(), SchemaMismatch> {
    let mut problems = Vec::new();
    for field in record.fields() {
        match file.field_with_name(field.name()) {
            Err(_) if field.is_nullable() => {}
            Err(_) => problems.push(ColumnProblem::Missing(field.name().clone())),
            Ok(f) if !castable(f.data_type(), field.data_type()) => {
                problems.push(ColumnProblem::Type {
                    column: field.name().clone(),
                    file_type: f.data_type().clone(),
                    record_type: field.data_type().clone(),
                })
            }
            Ok(_) => {}
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(SchemaMismatch(problems))
    }
}

fn castable(from: &DataType, to: &DataType) -> bool {
    from == to
        || (from.is_numeric() && to.is_numeric())
        || (matches!(
            from,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
        ) && matches!(
            to,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
        ))
        || (matches!(
            from,
            DataType::Timestamp(..) | DataType::Int64 | DataType::Date64
        ) && matches!(to, DataType::Timestamp(..)))
        || (matches!(from, DataType::Date32 | DataType::Date64) && matches!(to, DataType::Date32))
        || ((matches!(from, DataType::Dictionary(..)) || from.is_nested())
            && datafusion::arrow::compute::can_cast_types(from, to))
}

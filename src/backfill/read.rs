//! Reading one unit of a Parquet file into batches of the SQL `input` table: only the columns
//! the SQL reads, cast to the pipeline's record types, plus metadata columns (`_topic` is the
//! file, `_partition` the row group, `_offset` the row's index in the file). Rows with a null
//! or uncastable value in a non-nullable column are set aside as bad input.

use std::fs::File;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, Int8Array, Int32Array, Int64Array, MapBuilder, StringArray,
    StringBuilder, new_null_array,
};
use datafusion::arrow::compute::{cast, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ProjectionMask;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use datafusion::arrow::error::ArrowError;
use datafusion::parquet::errors::ParquetError;

use super::input::Unit;
use crate::codec::metadata::{self, input_table_schema};

/// Why a unit cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file cannot be opened.
    #[error("cannot open: {0}")]
    Open(#[source] std::io::Error),
    /// The file's footer cannot be read.
    #[error("cannot read footer: {0}")]
    Footer(#[source] ParquetError),
    /// The unit's row groups cannot be read.
    #[error("cannot read row groups {row_groups:?}: {source}")]
    RowGroups {
        /// The unit's row groups.
        row_groups: Vec<usize>,
        /// Why.
        #[source]
        source: ParquetError,
    },
    /// A batch of the unit's row groups cannot be decoded.
    #[error("row groups {row_groups:?}: cannot decode: {source}")]
    Decode {
        /// The unit's row groups.
        row_groups: Vec<usize>,
        /// Why.
        #[source]
        source: ArrowError,
    },
    /// A column cannot be cast to the record's type.
    #[error("column `{column}`: {source}")]
    Column {
        /// The column.
        column: String,
        /// Why.
        #[source]
        source: ArrowError,
    },
    /// Building the input batch failed.
    #[error(transparent)]
    Arrow(#[from] ArrowError),
}

/// One batch of a unit, ready for the SQL stage.
pub struct UnitBatch {
    /// Rows of the SQL `input` table (good rows only).
    pub input: RecordBatch,
    /// File row index of each row of `input`.
    pub offsets: Vec<i64>,
    /// Rows set aside: file row index, reason, and the row as read (JSON).
    pub bad: Vec<(i64, String, Vec<u8>)>,
}

/// Reads `unit` in batches of `batch_rows`, calling `emit` for each (blocking; run it on a
/// blocking thread). `wanted` are the input-table columns the SQL reads. Stops at the first error
/// or when `emit` returns false.
pub fn read_unit(
    unit: &Unit,
    record: &SchemaRef,
    wanted: &[String],
    batch_rows: usize,
    mut emit: impl FnMut(UnitBatch) -> bool,
) -> Result<(), ReadError> {
    let file = File::open(&unit.file).map_err(ReadError::Open)?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(ReadError::Footer)?;
    let file_schema = builder.schema().clone();
    let roots: Vec<usize> = file_schema
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| wanted.iter().any(|w| w == f.name()))
        .map(|(i, _)| i)
        .collect();
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
    let reader = builder
        .with_projection(mask)
        .with_row_groups(unit.row_groups.clone())
        .with_batch_size(batch_rows.max(1))
        .build()
        .map_err(|source| ReadError::RowGroups {
            row_groups: unit.row_groups.clone(),
            source,
        })?;
    let table = input_table_schema(record);
    let topic = unit.file.display().to_string();
    let mut next_row = unit.first_row;
    for batch in reader {
        let batch = batch.map_err(|source| ReadError::Decode {
            row_groups: unit.row_groups.clone(),
            source,
        })?;
        let n = batch.num_rows();
        let offsets: Vec<i64> = (next_row..next_row + n as i64).collect();
        next_row += n as i64;
        let groups: Vec<i32> = offsets.iter().map(|o| group_of(unit, *o)).collect();
        let out = to_input(&batch, record, &table, &topic, &offsets, &groups, wanted)?;
        if !emit(out) {
            break;
        }
    }
    Ok(())
}

/// The row group (index in the file) holding file row `offset` of `unit`.
fn group_of(unit: &Unit, offset: i64) -> i32 {
    let mut start = unit.first_row;
    for (g, rows) in unit.row_groups.iter().zip(&unit.group_rows) {
        if offset < start + *rows as i64 {
            return *g as i32;
        }
        start += *rows as i64;
    }
    unit.row_groups.last().copied().unwrap_or(0) as i32
}

fn to_input(
    batch: &RecordBatch,
    record: &SchemaRef,
    table: &SchemaRef,
    topic: &str,
    offsets: &[i64],
    groups: &[i32],
    wanted: &[String],
) -> Result<UnitBatch, ReadError> {
    let n = batch.num_rows();
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(table.fields().len());
    let mut bad_reason: Vec<Option<String>> = vec![None; n];
    for field in record.fields() {
        let column = match batch.column_by_name(field.name()) {
            Some(c) => {
                let cast_column =
                    cast(c, field.data_type()).map_err(|source| ReadError::Column {
                        column: field.name().clone(),
                        source,
                    })?;
                // Per row only when there is a null to find.
                if !field.is_nullable() && cast_column.null_count() > 0 {
                    for (r, reason) in bad_reason.iter_mut().enumerate() {
                        if cast_column.is_null(r) && reason.is_none() {
                            *reason = Some(if c.is_null(r) {
                                format!("column `{}` is null", field.name())
                            } else {
                                format!(
                                    "column `{}` does not fit {}",
                                    field.name(),
                                    field.data_type()
                                )
                            });
                        }
                    }
                }
                cast_column
            }
            // Not read (the SQL does not use it) or missing and nullable.
            None if field.is_nullable() => new_null_array(field.data_type(), n),
            None => placeholder(field.data_type(), n),
        };
        columns.push(column);
    }
    // Metadata columns, in `metadata_fields` order; built only when the SQL reads them (they
    // are all nullable, so unread ones are cheap null columns).
    let reads = |name: &str| wanted.iter().any(|w| w == name);
    columns.push(new_null_array(&DataType::Utf8, n));
    columns.push(if reads(metadata::TOPIC) {
        Arc::new(StringArray::from_iter_values(std::iter::repeat_n(topic, n)))
    } else {
        new_null_array(&DataType::Utf8, n)
    });
    columns.push(if reads(metadata::PARTITION) {
        Arc::new(Int32Array::from(groups.to_vec()))
    } else {
        new_null_array(&DataType::Int32, n)
    });
    columns.push(if reads(metadata::OFFSET) {
        Arc::new(Int64Array::from(offsets.to_vec()))
    } else {
        new_null_array(&DataType::Int64, n)
    });
    columns.push(new_null_array(
        &DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
        n,
    ));
    columns.push(if reads(metadata::HEADERS) {
        let mut headers = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
        for _ in 0..n {
            headers.append(true)?;
        }
        Arc::new(headers.finish())
    } else {
        new_null_array(&metadata::headers_type(), n)
    });

    let any_bad = bad_reason.iter().any(Option::is_some);
    // Columns with nulls in non-nullable fields cannot form a batch: fill those rows with a
    // placeholder first, then drop them.
    if any_bad {
        for (column, field) in columns.iter_mut().zip(record.fields()) {
            if !field.is_nullable() && column.null_count() > 0 {
                let filler = placeholder(field.data_type(), n);
                *column = datafusion::arrow::compute::kernels::zip::zip(
                    &BooleanArray::from_iter((0..n).map(|r| Some(column.is_valid(r)))),
                    column,
                    &filler,
                )?;
            }
        }
    }
    let input = RecordBatch::try_new(table.clone(), columns)?;
    if !any_bad {
        return Ok(UnitBatch {
            input,
            offsets: offsets.to_vec(),
            bad: Vec::new(),
        });
    }
    let keep = BooleanArray::from_iter(bad_reason.iter().map(|r| Some(r.is_none())));
    let input = filter_record_batch(&input, &keep)?;
    let raw = crate::codec::json::encode_rows(batch)?;
    let mut bad = Vec::new();
    let mut kept = Vec::new();
    for (r, reason) in bad_reason.into_iter().enumerate() {
        match reason {
            Some(reason) => bad.push((offsets[r], reason, original_bytes(&raw, r))),
            None => kept.push(offsets[r]),
        }
    }
    Ok(UnitBatch {
        input,
        offsets: kept,
        bad,
    })
}

/// A non-null array of `n` zero / empty / false values of `data_type` (for columns the SQL does
/// not read, and as filler for rows that are dropped anyway).
fn placeholder(data_type: &DataType, n: usize) -> ArrayRef {
    use datafusion::arrow::array::{ListArray, MapArray, StructArray, new_empty_array};
    use datafusion::arrow::buffer::OffsetBuffer;
    let zeros: ArrayRef = Arc::new(Int8Array::from(vec![0i8; n]));
    match data_type {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => cast(
            &(Arc::new(StringArray::from(vec![""; n])) as ArrayRef),
            data_type,
        )
        .unwrap_or_else(|_| new_null_array(data_type, n)),
        // Nested types cannot be cast to: build them, non-null all the way down.
        DataType::Struct(fields) => Arc::new(StructArray::new(
            fields.clone(),
            fields
                .iter()
                .map(|f| placeholder(f.data_type(), n))
                .collect(),
            None,
        )),
        DataType::List(field) => Arc::new(ListArray::new(
            field.clone(),
            OffsetBuffer::new_zeroed(n),
            new_empty_array(field.data_type()),
            None,
        )),
        DataType::Map(field, sorted) => {
            match new_empty_array(field.data_type())
                .as_any()
                .downcast_ref::<StructArray>()
            {
                Some(entries) => Arc::new(MapArray::new(
                    field.clone(),
                    OffsetBuffer::new_zeroed(n),
                    entries.clone(),
                    None,
                    *sorted,
                )),
                None => new_null_array(data_type, n),
            }
        }
        _ => cast(&zeros, data_type).unwrap_or_else(|_| new_null_array(data_type, n)),
    }
}

/// The JSON form of row `row` of the original columns, kept as a dead row's record; a row that
/// cannot be written as JSON keeps why instead, so the dead row still says what it was.
pub fn original_bytes(encoded: &crate::codec::json::EncodedRows, row: usize) -> Vec<u8> {
    match encoded.row(row) {
        Ok(bytes) => bytes.to_vec(),
        Err(why) => format!("(not representable as JSON: {why})").into_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{Field, Fields};

    #[test]
    fn placeholders_are_non_null_even_when_nested() {
        let nested = DataType::Struct(Fields::from(vec![
            Field::new("name", DataType::Utf8, false),
            Field::new("tags", DataType::new_list(DataType::Utf8, false), false),
            Field::new("score", DataType::Float64, false),
        ]));
        for dt in [nested, DataType::Int64, DataType::Utf8, DataType::Boolean] {
            let a = placeholder(&dt, 3);
            assert_eq!(a.len(), 3);
            assert_eq!(a.null_count(), 0, "{dt}");
            assert_eq!(a.data_type(), &dt);
        }
    }
}

//! Source metadata columns, appended after the decoded record columns of every batch so SQL
//! can use them: `_key`, `_topic`, `_partition`, `_offset`, `_timestamp` and `_headers`.
//!
//! All are nullable. Keys and header values are bytes on the wire; they are shown as UTF-8
//! (invalid sequences replaced by U+FFFD), the original bytes stay in the [`RawRecord`] for
//! dead-lettering.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{
    ArrayRef, Int32Builder, Int64Builder, MapBuilder, StringBuilder, TimestampMillisecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

use crate::batch::RawRecord;

/// Message key, as lossy UTF-8.
pub const KEY: &str = "_key";
/// Topic (or subject / file) the record was read from.
pub const TOPIC: &str = "_topic";
/// Partition.
pub const PARTITION: &str = "_partition";
/// Offset within the partition.
pub const OFFSET: &str = "_offset";
/// Broker or producer timestamp (UTC, milliseconds).
pub const TIMESTAMP: &str = "_timestamp";
/// Headers as a map of name → lossy UTF-8 value (a header without value maps to null).
pub const HEADERS: &str = "_headers";

/// The metadata column names, in the order they are appended.
pub const METADATA_COLUMNS: [&str; 6] = [KEY, TOPIC, PARTITION, OFFSET, TIMESTAMP, HEADERS];

/// Prefix of column names used internally (such as the SQL stage's row-id column); record
/// fields may not use it.
pub const RESERVED_PREFIX: &str = "__sg_";

/// Whether `name` is one of the metadata columns.
pub fn is_metadata_column(name: &str) -> bool {
    METADATA_COLUMNS.contains(&name)
}

/// The Arrow type of `_headers`: `Map<Utf8, Utf8>` with the field names arrow's `MapBuilder`
/// uses (`entries`, `keys`, `values`), unsorted.
pub fn headers_type() -> DataType {
    let entries = Field::new(
        "entries",
        DataType::Struct(Fields::from(vec![
            Field::new("keys", DataType::Utf8, false),
            Field::new("values", DataType::Utf8, true),
        ])),
        false,
    );
    DataType::Map(Arc::new(entries), false)
}

/// The metadata fields, in order.
pub fn metadata_fields() -> &'static Fields {
    static FIELDS: LazyLock<Fields> = LazyLock::new(|| {
        Fields::from(vec![
            Field::new(KEY, DataType::Utf8, true),
            Field::new(TOPIC, DataType::Utf8, true),
            Field::new(PARTITION, DataType::Int32, true),
            Field::new(OFFSET, DataType::Int64, true),
            Field::new(
                TIMESTAMP,
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                true,
            ),
            Field::new(HEADERS, headers_type(), true),
        ])
    });
    &FIELDS
}

/// The schema of the SQL `input` table: the record fields followed by the metadata fields.
pub fn input_table_schema(record: &SchemaRef) -> SchemaRef {
    let fields: Vec<Arc<Field>> = record
        .fields()
        .iter()
        .chain(metadata_fields().iter())
        .cloned()
        .collect();
    Arc::new(Schema::new_with_metadata(fields, record.metadata().clone()))
}

/// Builds the metadata columns for the records at `rows` (indices into `records`), in the
/// order of [`METADATA_COLUMNS`]. An index out of range yields a row of nulls.
pub fn metadata_arrays(records: &[RawRecord], rows: &[u32]) -> Vec<ArrayRef> {
    let n = rows.len();
    let mut key = StringBuilder::with_capacity(n, n * 16);
    let mut topic = StringBuilder::with_capacity(n, n * 16);
    let mut partition = Int32Builder::with_capacity(n);
    let mut offset = Int64Builder::with_capacity(n);
    let mut timestamp = TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut headers = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());

    for &row in rows {
        let Some(r) = records.get(row as usize) else {
            key.append_null();
            topic.append_null();
            partition.append_null();
            offset.append_null();
            timestamp.append_null();
            // A null map entry: `append(false)` cannot fail with no pending entries.
            let _ = headers.append(false);
            continue;
        };
        match &r.key {
            Some(k) => key.append_value(String::from_utf8_lossy(k)),
            None => key.append_null(),
        }
        topic.append_value(&*r.position.topic);
        partition.append_value(r.position.partition);
        offset.append_value(r.position.offset);
        timestamp.append_option(r.timestamp_ms);
        for (name, value) in &r.headers {
            headers.keys().append_value(name);
            match value {
                Some(v) => headers.values().append_value(String::from_utf8_lossy(v)),
                None => headers.values().append_null(),
            }
        }
        // Keys and values were appended in pairs above, so this cannot fail.
        let _ = headers.append(true);
    }

    vec![
        Arc::new(key.finish()),
        Arc::new(topic.finish()),
        Arc::new(partition.finish()),
        Arc::new(offset.finish()),
        Arc::new(timestamp.finish()),
        Arc::new(headers.finish()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::Position;
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::datatypes::{Int32Type, Int64Type, TimestampMillisecondType};

    fn record(i: i64) -> RawRecord {
        RawRecord {
            key: if i == 1 { None } else { Some(vec![b'k', 0xff]) },
            payload: b"{}".to_vec(),
            headers: vec![("h".into(), Some(b"v".to_vec())), ("empty".into(), None)],
            timestamp_ms: Some(1_700_000_000_000 + i),
            position: Position {
                topic: "tx".into(),
                partition: 3,
                offset: 100 + i,
            },
        }
    }

    #[test]
    fn arrays_match_schema_and_content() {
        let records: Vec<RawRecord> = (0..3).map(record).collect();
        let arrays = metadata_arrays(&records, &[2, 1, 7]);
        let fields = metadata_fields();
        for (a, f) in arrays.iter().zip(fields.iter()) {
            assert_eq!(a.data_type(), f.data_type(), "{}", f.name());
            assert_eq!(a.len(), 3);
        }
        let key = arrays[0].as_string::<i32>();
        assert_eq!(key.value(0), "k\u{fffd}");
        assert!(key.is_null(1));
        assert!(key.is_null(2));
        assert_eq!(arrays[1].as_string::<i32>().value(0), "tx");
        assert_eq!(arrays[2].as_primitive::<Int32Type>().value(1), 3);
        assert_eq!(arrays[3].as_primitive::<Int64Type>().value(0), 102);
        assert_eq!(
            arrays[4]
                .as_primitive::<TimestampMillisecondType>()
                .value(1),
            1_700_000_000_001
        );
        let headers = arrays[5].as_map();
        assert_eq!(headers.value_length(0), 2);
        assert!(headers.is_null(2));
        let entries = headers.value(0);
        assert_eq!(entries.column(0).as_string::<i32>().value(0), "h");
        assert_eq!(entries.column(1).as_string::<i32>().value(0), "v");
        assert!(entries.column(1).is_null(1));
    }

    #[test]
    fn input_schema_appends_metadata() {
        let record = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, false)]));
        let schema = input_table_schema(&record);
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(
            names,
            [
                "a",
                "_key",
                "_topic",
                "_partition",
                "_offset",
                "_timestamp",
                "_headers"
            ]
        );
    }
}

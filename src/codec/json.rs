//! JSON codec: payloads → Arrow with per-record isolation of bad input, and Arrow → one JSON
//! object per row.
//!
//! Flat records (strings, booleans, numbers, timestamps) take a one-pass fast path
//! ([`super::json_flat`]) as far as it goes. The rest uses arrow-json's streaming decoder over
//! the remaining micro-batch. When that fails, the bad records are isolated without giving up
//! on the good ones:
//!
//! - syntax errors, truncated objects and payloads holding more than one value are caught while
//!   the record's own bytes are fed (the decoder is checked after each record), so the culprit
//!   is known exactly; the clean prefix is decoded again and decoding carries on after it;
//! - type errors and missing fields only surface when the decoder builds columns, for the batch
//!   as a whole; the batch is then split into [`SPLIT_WAYS`] chunks, each decoded with a fresh
//!   decoder, recursively, until the failing records stand alone.
//!
//! One bad record among 1000 costs about two decodes of the batch; good records keep their
//! order.
//!
//! Size: the code is under ~550 lines; the file passes the ~600-line mark only because of its
//! inline tests, which stay beside the code they pin down.

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::json::writer::LineDelimited;
use datafusion::arrow::json::{ReaderBuilder, WriterBuilder};

use super::RecordFailure;
use super::json_flat::FlatDecoder;
use super::metadata::{input_table_schema, metadata_arrays};
use crate::batch::{ErrorClass, RawRecord};

/// Fan-out when a failing chunk is split to isolate bad records. Eight-way keeps the extra work
/// for one bad record near one decode of the batch (n + n + n/8 + ...), where halving costs
/// about two.
const SPLIT_WAYS: usize = 8;

/// Longest failure message kept: enough to see the field and value, bounded for dead-letter
/// headers.
const MAX_MESSAGE: usize = 300;

/// Decodes JSON payloads into Arrow batches of a fixed record schema.
#[derive(Debug, Clone)]
pub struct JsonDecoder {
    record_schema: SchemaRef,
    table_schema: SchemaRef,
    /// The fast path, when every column is of a flat type.
    flat: Option<FlatDecoder>,
}

/// The result of decoding a batch of records.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// The decoded rows: record columns followed by the metadata columns
    /// ([`input_table_schema`]).
    pub batch: RecordBatch,
    /// For each row of `batch`, the index of its record in the input slice (ascending).
    pub rows: Vec<u32>,
    /// The records that could not be decoded, by ascending index.
    pub failures: Vec<RecordFailure>,
}

enum Attempt {
    /// Every record decoded.
    Ok(RecordBatch),
    /// The record at this position of the attempted slice failed on its own bytes.
    BadRecord {
        at: usize,
        class: ErrorClass,
        message: String,
    },
    /// Building the columns failed; which record is to blame is unknown.
    Failed(ArrowError),
}

impl JsonDecoder {
    /// A decoder for records of `record_schema`. Every type [`super::schema`] produces is
    /// decodable; use [`Self::try_new`] to check an arbitrary schema up front (otherwise an
    /// undecodable type makes every record fail; it never panics).
    pub fn new(record_schema: SchemaRef) -> Self {
        let table_schema = input_table_schema(&record_schema);
        JsonDecoder {
            flat: FlatDecoder::new(&record_schema),
            record_schema,
            table_schema,
        }
    }

    /// A decoder that always uses arrow-json (the reference the fast path is tested against).
    #[cfg(test)]
    pub(super) fn without_fast_path(record_schema: SchemaRef) -> Self {
        JsonDecoder {
            flat: None,
            ..Self::new(record_schema)
        }
    }

    /// Like [`Self::new`], but fails if arrow-json cannot decode one of the schema's types.
    pub fn try_new(record_schema: SchemaRef) -> Result<Self, ArrowError> {
        ReaderBuilder::new(record_schema.clone()).build_decoder()?;
        Ok(Self::new(record_schema))
    }

    /// The schema of the decoded record columns.
    pub fn record_schema(&self) -> &SchemaRef {
        &self.record_schema
    }

    /// The schema of [`Decoded::batch`]: record columns then metadata columns.
    pub fn output_schema(&self) -> &SchemaRef {
        &self.table_schema
    }

    /// Decodes `records`. Never fails as a whole: records that cannot be decoded are reported
    /// in [`Decoded::failures`] and the others are returned in order.
    pub fn decode(&self, records: &[RawRecord]) -> Decoded {
        let mut failures = Vec::new();
        let mut candidates = Vec::with_capacity(records.len());
        for (i, r) in records.iter().enumerate() {
            match precheck(&r.payload) {
                Ok(()) => candidates.push(i as u32),
                Err((class, message)) => failures.push(RecordFailure {
                    index: i,
                    class,
                    message,
                }),
            }
        }

        // The fast path decodes every record it can in one pass; arrow-json decodes the ones
        // it sets aside (and isolates the bad ones). With 1% bad input the good 99% never
        // leave the fast path, so bad input costs about what it weighs.
        let (fast, fast_rows, rest) = match &self.flat {
            Some(flat) => {
                let decoded = flat.decode_subset(records, &candidates);
                (decoded.batch, decoded.taken, decoded.left)
            }
            None => (None, Vec::new(), candidates),
        };
        // The fast path takes flat records only, so only what arrow-json gets can nest deeply
        // (and arrow-json formats a mistyped value recursively for its error message).
        let max = super::nesting::MAX_JSON_DEPTH;
        let rest: Vec<u32> = rest
            .into_iter()
            .filter(|&i| {
                let payload = records.get(i as usize).map_or(&[][..], |r| &r.payload);
                match super::nesting::check_json_depth(payload, max) {
                    Ok(()) => true,
                    Err(at) => {
                        failures.push(RecordFailure {
                            index: i as usize,
                            class: ErrorClass::TooDeep,
                            message: format!(
                                "nests arrays and objects deeper than {max} levels (at byte {at})"
                            ),
                        });
                        false
                    }
                }
            })
            .collect();
        let mut parts = Vec::new();
        let mut slow_rows = Vec::with_capacity(rest.len());
        self.process(records, &rest, &mut parts, &mut slow_rows, &mut failures);
        failures.sort_by_key(|f| f.index);

        let (record_batch, rows) = match fast {
            None => (self.concat(&parts), slow_rows),
            Some(fast) if parts.is_empty() => (Ok(fast), fast_rows),
            Some(fast) => merge_in_order(fast, fast_rows, &parts, slow_rows),
        };
        let batch = record_batch.and_then(|b| {
            let mut columns = b.columns().to_vec();
            columns.extend(metadata_arrays(records, &rows));
            RecordBatch::try_new(self.table_schema.clone(), columns)
        });
        match batch {
            Ok(batch) => Decoded {
                batch,
                rows,
                failures,
            },
            // Not expected (the parts share one schema); never lose records silently.
            Err(e) => {
                let message = trim(&e.to_string());
                failures.extend(rows.iter().map(|&i| RecordFailure {
                    index: i as usize,
                    class: ErrorClass::InvalidValue,
                    message: message.clone(),
                }));
                failures.sort_by_key(|f| f.index);
                Decoded {
                    batch: RecordBatch::new_empty(self.table_schema.clone()),
                    rows: Vec::new(),
                    failures,
                }
            }
        }
    }

    /// The parts as one batch of the record schema.
    fn concat(&self, parts: &[RecordBatch]) -> Result<RecordBatch, ArrowError> {
        match parts {
            [] => Ok(RecordBatch::new_empty(self.record_schema.clone())),
            [one] => Ok(one.clone()),
            _ => concat_batches(&self.record_schema, parts),
        }
    }

    /// Decodes the records at `idx`, appending decoded parts and their record indices in
    /// order, and failures in any order.
    fn process(
        &self,
        records: &[RawRecord],
        mut idx: &[u32],
        parts: &mut Vec<RecordBatch>,
        rows: &mut Vec<u32>,
        failures: &mut Vec<RecordFailure>,
    ) {
        while !idx.is_empty() {
            match self.attempt(records, idx) {
                Attempt::Ok(batch) => {
                    if batch.num_rows() == idx.len() {
                        parts.push(batch);
                        rows.extend_from_slice(idx);
                    } else {
                        // arrow-json produced a different row count: cannot map rows to records.
                        failures.extend(idx.iter().map(|&i| RecordFailure {
                            index: i as usize,
                            class: ErrorClass::NotAnObject,
                            message: "decoder row count does not match the record count".into(),
                        }));
                    }
                    return;
                }
                Attempt::BadRecord { at, class, message } => {
                    if let Some(&i) = idx.get(at) {
                        failures.push(RecordFailure {
                            index: i as usize,
                            class,
                            message,
                        });
                    }
                    self.process(records, &idx[..at.min(idx.len())], parts, rows, failures);
                    idx = idx.get(at + 1..).unwrap_or(&[]);
                }
                Attempt::Failed(e) => {
                    if let [single] = idx {
                        let (class, message) = classify(&e);
                        failures.push(RecordFailure {
                            index: *single as usize,
                            class,
                            message,
                        });
                    } else {
                        let chunk = idx.len().div_ceil(SPLIT_WAYS);
                        for part in idx.chunks(chunk) {
                            self.process(records, part, parts, rows, failures);
                        }
                    }
                    return;
                }
            }
        }
    }

    /// One decode of the records at `idx` with a fresh decoder.
    fn attempt(&self, records: &[RawRecord], idx: &[u32]) -> Attempt {
        // Capacity for one extra row so a record holding two objects is still read whole and
        // caught by the row count check.
        let decoder = ReaderBuilder::new(self.record_schema.clone())
            .with_batch_size(idx.len() + 1)
            .build_decoder();
        let mut decoder = match decoder {
            Ok(d) => d,
            Err(e) => return Attempt::Failed(e),
        };
        for (at, &i) in idx.iter().enumerate() {
            let payload = records
                .get(i as usize)
                .map(|r| r.payload.as_slice())
                .unwrap_or_default();
            let bad = |class, message: String| Attempt::BadRecord { at, class, message };
            match decoder.decode(payload) {
                Err(e) => return bad(ErrorClass::MalformedJson, error_text(&e)),
                Ok(read) if read != payload.len() => {
                    return bad(
                        ErrorClass::NotAnObject,
                        "the payload holds more than one JSON value".into(),
                    );
                }
                Ok(_) => {}
            }
            // The row count includes a partially read row, so check it first: `{..} 5` is two
            // values, not a truncated object.
            if decoder.len() > at + 1 {
                return bad(
                    ErrorClass::NotAnObject,
                    "the payload holds more than one JSON value".into(),
                );
            }
            if decoder.has_partial_record() || decoder.len() != at + 1 {
                return bad(
                    ErrorClass::MalformedJson,
                    "truncated JSON: the object is not closed".into(),
                );
            }
        }
        match decoder.flush() {
            Ok(Some(batch)) => Attempt::Ok(batch),
            Ok(None) => Attempt::Ok(RecordBatch::new_empty(self.record_schema.clone())),
            Err(e) => Attempt::Failed(e),
        }
    }
}

/// Interleaves the fast path's rows and arrow-json's rows back into record order (both are
/// ascending): one copy of the rows, done only when both paths decoded some.
fn merge_in_order(
    fast: RecordBatch,
    fast_rows: Vec<u32>,
    slow: &[RecordBatch],
    slow_rows: Vec<u32>,
) -> (Result<RecordBatch, ArrowError>, Vec<u32>) {
    let mut sources: Vec<&RecordBatch> = Vec::with_capacity(slow.len() + 1);
    sources.push(&fast);
    sources.extend(slow);
    // (source batch, row in it) of each slow row, in order.
    let slow_at: Vec<(usize, usize)> = slow
        .iter()
        .enumerate()
        .flat_map(|(part, b)| (0..b.num_rows()).map(move |row| (part + 1, row)))
        .collect();
    let mut order = Vec::with_capacity(fast_rows.len() + slow_rows.len());
    let mut rows = Vec::with_capacity(order.capacity());
    let (mut f, mut s) = (0, 0);
    while f < fast_rows.len() || s < slow_rows.len() {
        let take_fast = match (fast_rows.get(f), slow_rows.get(s)) {
            (Some(a), Some(b)) => a < b,
            (Some(_), None) => true,
            _ => false,
        };
        if take_fast {
            order.push((0, f));
            rows.push(fast_rows[f]);
            f += 1;
        } else {
            // `slow_at` has one entry per slow row (checked below before it is used).
            order.push(slow_at.get(s).copied().unwrap_or((0, 0)));
            rows.push(slow_rows[s]);
            s += 1;
        }
    }
    if slow_at.len() != slow_rows.len() {
        // Not expected: `process` keeps rows and indices in step. Every row then fails
        // (see `decode`), none is lost.
        let e = ArrowError::JsonError("decoded rows do not match their records".into());
        return (Err(e), rows);
    }
    (
        datafusion::arrow::compute::interleave_record_batch(&sources, &order),
        rows,
    )
}

/// Cheap checks before decoding: the payload must start (after whitespace) with `{`.
fn precheck(payload: &[u8]) -> Result<(), (ErrorClass, String)> {
    match payload.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => Ok(()),
        None => Err((ErrorClass::MalformedJson, "empty payload".into())),
        Some(b) => {
            let found = match b {
                b'[' => "an array",
                b'"' => "a string",
                b'-' | b'0'..=b'9' => "a number",
                b't' | b'f' => "a boolean",
                b'n' => "null",
                _ => {
                    return Err((
                        ErrorClass::MalformedJson,
                        format!("not JSON: unexpected {:?}", *b as char),
                    ));
                }
            };
            Err((
                ErrorClass::NotAnObject,
                format!("expected a JSON object, found {found}"),
            ))
        }
    }
}

/// The error text without arrow's "Json error: " prefix, bounded.
fn error_text(e: &ArrowError) -> String {
    match e {
        ArrowError::JsonError(s) | ArrowError::ParseError(s) => trim(s),
        other => trim(&other.to_string()),
    }
}

/// Bounded class and message of a decode error of a single record.
fn classify(e: &ArrowError) -> (ErrorClass, String) {
    let text = match e {
        ArrowError::JsonError(s) | ArrowError::ParseError(s) => s.as_str(),
        _ => return (ErrorClass::InvalidValue, error_text(e)),
    };
    if let Some(field) = missing_field_path(text) {
        return (
            ErrorClass::MissingField,
            trim(&format!("required field `{field}` is missing or null")),
        );
    }
    let class = if text.contains("expected ") && text.contains(" got ") {
        ErrorClass::TypeMismatch
    } else if text.contains("non-UTF-8")
        || text.contains("UTF-8 sequence")
        || text.contains("surrogate")
        || text.contains("Encountered unexpected")
        || text.contains("Truncated record")
    {
        ErrorClass::MalformedJson
    } else {
        ErrorClass::InvalidValue
    };
    (class, trim(text))
}

/// For arrow-json's "unmasked nulls in non-nullable" error, the dotted path of the field.
fn missing_field_path(text: &str) -> Option<String> {
    const NULLS: &str = "unmasked nulls in non-nullable";
    const WHILST: &str = "whilst decoding field '";
    let at = text.find(NULLS)?;
    let mut path: Vec<&str> = Vec::new();
    let mut rest = &text[..at];
    while let Some(p) = rest.find(WHILST) {
        rest = &rest[p + WHILST.len()..];
        let end = rest.find('\'')?;
        path.push(&rest[..end]);
        rest = &rest[end..];
    }
    let tail = &text[at..];
    let start = tail.find("Field { \"")? + "Field { \"".len();
    let name_len = tail[start..].find('"')?;
    path.push(&tail[start..start + name_len]);
    Some(path.join("."))
}

fn trim(message: &str) -> String {
    crate::codec::truncate_message(message, MAX_MESSAGE)
}

/// Rows of a batch encoded as JSON objects, one per row, in one buffer, and the rows that
/// could not be encoded.
#[derive(Debug, Clone, Default)]
pub struct EncodedRows {
    buf: Vec<u8>,
    /// End (exclusive, before the newline) of each encoded row in `buf`.
    ends: Vec<usize>,
    /// Rows of the batch that could not be encoded, ascending, with why.
    failed: Vec<(usize, String)>,
}

impl EncodedRows {
    /// Number of rows, encoded or not.
    pub fn len(&self) -> usize {
        self.ends.len() + self.failed.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The JSON object of row `i` (without a trailing newline), or why it could not be
    /// encoded.
    pub fn row(&self, i: usize) -> Result<&[u8], &str> {
        let line = match self.failed.binary_search_by_key(&i, |(row, _)| *row) {
            Ok(at) => return Err(&self.failed[at].1),
            // `at` failed rows come before row `i`.
            Err(at) => i - at,
        };
        let end = *self.ends.get(line).ok_or("row out of range")?;
        let start = match line {
            0 => 0,
            _ => self.ends[line - 1] + 1,
        };
        self.buf.get(start..end).ok_or("row out of range")
    }

    /// Rows that could not be encoded, ascending, with why.
    pub fn failed(&self) -> &[(usize, String)] {
        &self.failed
    }
}

/// Encodes every row of `batch` as one JSON object. Nulls are written explicitly, timestamps
/// as RFC 3339 strings, maps as objects. A row holding a value that cannot be written as JSON
/// (a timestamp beyond what a date can spell) is that row's failure, never text in the output:
/// [`EncodedRows::row`] tells why.
pub fn encode_rows(batch: &RecordBatch) -> Result<EncodedRows, ArrowError> {
    let failed = super::json_check::unencodable_rows(batch);
    let writable = if failed.is_empty() {
        std::borrow::Cow::Borrowed(batch)
    } else {
        let mut keep = vec![true; batch.num_rows()];
        for (row, _) in &failed {
            keep[*row] = false;
        }
        let keep = datafusion::arrow::array::BooleanArray::from(keep);
        std::borrow::Cow::Owned(datafusion::arrow::compute::filter_record_batch(
            batch, &keep,
        )?)
    };
    let batch = writable.as_ref();
    let mut buf = Vec::with_capacity(batch.get_array_memory_size().min(1 << 24) + 64);
    {
        let mut writer = WriterBuilder::new()
            .with_explicit_nulls(true)
            .with_encoder_factory(std::sync::Arc::new(super::json_timestamp::UtcTimestamps))
            .build::<_, LineDelimited>(&mut buf);
        writer.write(batch)?;
        writer.finish()?;
    }
    // JSON escapes control characters inside strings, so every newline ends a row.
    let ends: Vec<usize> = memchr::memchr_iter(b'\n', &buf).collect();
    if ends.len() != batch.num_rows() {
        return Err(ArrowError::JsonError(format!(
            "encoded {} lines for {} rows",
            ends.len(),
            batch.num_rows()
        )));
    }
    Ok(EncodedRows { buf, ends, failed })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::datatypes::{
        DataType, Field, Float64Type, Int32Type, Int64Type, Schema, TimeUnit,
    };

    use super::*;
    use crate::batch::Position;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("amount", DataType::Float64, false),
            Field::new("n", DataType::Int32, true),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                true,
            ),
        ]))
    }

    fn rec(i: usize, payload: &str) -> RawRecord {
        RawRecord {
            key: Some(format!("k{i}").into_bytes()),
            payload: payload.as_bytes().to_vec(),
            headers: vec![("src".into(), Some(b"test".to_vec()))],
            timestamp_ms: Some(1_000 + i as i64),
            position: Position {
                topic: "t".into(),
                partition: 2,
                offset: i as i64,
            },
        }
    }

    fn good(i: usize) -> String {
        format!(r#"{{"id":"r{i}","amount":{i}.5,"n":{i},"ts":"2026-01-01T00:00:00Z","extra":[1]}}"#)
    }

    #[test]
    fn all_good_fast_path() {
        let d = JsonDecoder::new(schema());
        let records: Vec<_> = (0..10).map(|i| rec(i, &good(i))).collect();
        let out = d.decode(&records);
        assert!(out.failures.is_empty(), "{:?}", out.failures);
        assert_eq!(out.rows, (0..10).collect::<Vec<u32>>());
        assert_eq!(out.batch.num_rows(), 10);
        assert_eq!(out.batch.schema(), *d.output_schema());
        let amount = out.batch.column(1).as_primitive::<Float64Type>();
        assert_eq!(amount.value(3), 3.5);
    }

    #[test]
    fn one_percent_bad_among_1000() {
        let d = JsonDecoder::new(schema());
        let bad_kinds = [
            r#"{"id":"x","amount":"#,                        // truncated
            r#"{"id": 5, "amount": 1.0}"#,                   // type mismatch
            r#"{"amount": 1.0}"#,                            // missing id
            r#"[1,2]"#,                                      // not an object
            r#"{"id":"x","amount":1}{"id":"y","amount":2}"#, // two objects
            r#"{"id":"x","amount":1,"ts":"yesterday"}"#,     // invalid value
            r#"{"id":x,"amount":1}"#,                        // syntax
            "",                                              // empty
            r#"{"id":"x","amount":1,"n":3000000000}"#,       // out of range
            r#"{"id":null,"amount":1}"#,                     // null non-nullable
        ];
        let bad_at: Vec<usize> = (0..10).map(|k| 37 + k * 97).collect();
        let records: Vec<_> = (0..1000)
            .map(|i| match bad_at.iter().position(|&b| b == i) {
                Some(k) => rec(i, bad_kinds[k]),
                None => rec(i, &good(i)),
            })
            .collect();
        let out = d.decode(&records);
        let failed: Vec<usize> = out.failures.iter().map(|f| f.index).collect();
        assert_eq!(failed, bad_at, "{:#?}", out.failures);
        let expected_rows: Vec<u32> = (0..1000u32)
            .filter(|i| !bad_at.contains(&(*i as usize)))
            .collect();
        assert_eq!(out.rows, expected_rows);
        assert_eq!(out.batch.num_rows(), 990);
        // Each row is the record it says it is.
        let ids = out.batch.column(0).as_string::<i32>();
        let offsets = out.batch.column(7).as_primitive::<Int64Type>();
        for (row, &rec_idx) in out.rows.iter().enumerate() {
            assert_eq!(ids.value(row), format!("r{rec_idx}"));
            assert_eq!(offsets.value(row), rec_idx as i64);
        }
        let classes: Vec<ErrorClass> = out.failures.iter().map(|f| f.class).collect();
        assert_eq!(
            classes,
            [
                ErrorClass::MalformedJson,
                ErrorClass::TypeMismatch,
                ErrorClass::MissingField,
                ErrorClass::NotAnObject,
                ErrorClass::NotAnObject,
                ErrorClass::InvalidValue,
                ErrorClass::MalformedJson,
                ErrorClass::MalformedJson,
                ErrorClass::InvalidValue,
                ErrorClass::MissingField,
            ],
            "{:#?}",
            out.failures
        );
        assert!(
            out.failures[2].message.contains("`id`"),
            "{:?}",
            out.failures[2]
        );
    }

    #[test]
    fn each_failure_class_alone() {
        let d = JsonDecoder::new(schema());
        let cases = [
            ("{\"id\":\"a\",\"amount\":1", ErrorClass::MalformedJson),
            ("   ", ErrorClass::MalformedJson),
            ("{\"id\":\"\u{0}\"", ErrorClass::MalformedJson),
            ("42", ErrorClass::NotAnObject),
            ("\"s\"", ErrorClass::NotAnObject),
            ("{\"id\":\"a\",\"amount\":1} 5", ErrorClass::NotAnObject),
            ("{\"amount\":1}", ErrorClass::MissingField),
            ("{\"id\":\"a\",\"amount\":true}", ErrorClass::TypeMismatch),
            ("{\"id\":{},\"amount\":1}", ErrorClass::TypeMismatch),
            (
                "{\"id\":\"a\",\"amount\":\"lots\"}",
                ErrorClass::InvalidValue,
            ),
        ];
        for (payload, class) in cases {
            let out = d.decode(&[rec(0, payload)]);
            assert_eq!(out.failures.len(), 1, "{payload}: {:?}", out.failures);
            assert_eq!(
                out.failures[0].class, class,
                "{payload}: {:?}",
                out.failures
            );
            assert!(!out.failures[0].message.is_empty());
            assert_eq!(out.batch.num_rows(), 0);
        }
        // Invalid UTF-8 in a string.
        let mut r = rec(0, "");
        r.payload = b"{\"id\":\"\xff\",\"amount\":1}".to_vec();
        let out = d.decode(&[r]);
        assert_eq!(
            out.failures[0].class,
            ErrorClass::MalformedJson,
            "{:?}",
            out.failures
        );
    }

    #[test]
    fn metadata_columns_content() {
        let d = JsonDecoder::new(schema());
        let records = vec![rec(0, &good(0)), rec(1, "oops"), rec(2, &good(2))];
        let out = d.decode(&records);
        let b = &out.batch;
        let s = b.schema();
        assert_eq!(s.field(4).name(), "_key");
        assert_eq!(b.column(4).as_string::<i32>().value(1), "k2");
        assert_eq!(b.column(5).as_string::<i32>().value(0), "t");
        assert_eq!(b.column(6).as_primitive::<Int32Type>().value(1), 2);
        assert_eq!(b.column(7).as_primitive::<Int64Type>().value(1), 2);
        assert!(b.column(2).is_valid(0));
    }

    #[test]
    fn nested_missing_field_names_path() {
        let inner = Field::new(
            "geo",
            DataType::Struct(vec![Field::new("lat", DataType::Float64, false)].into()),
            true,
        );
        let d = JsonDecoder::new(Arc::new(Schema::new(vec![inner])));
        let out = d.decode(&[
            rec(0, r#"{"geo":{"lon":1}}"#),
            rec(1, r#"{"geo":{"lat":1}}"#),
        ]);
        assert_eq!(out.rows, [1]);
        assert_eq!(out.failures[0].class, ErrorClass::MissingField);
        assert!(
            out.failures[0].message.contains("geo.lat"),
            "{:?}",
            out.failures
        );
    }

    #[test]
    fn empty_input() {
        let d = JsonDecoder::new(schema());
        let out = d.decode(&[]);
        assert_eq!(out.batch.num_rows(), 0);
        assert_eq!(out.batch.num_columns(), 10);
        let out = d.decode(&[rec(0, "x")]);
        assert_eq!(out.batch.num_rows(), 0);
        assert_eq!(out.failures[0].class, ErrorClass::MalformedJson);
    }

    #[test]
    fn encode_roundtrip() {
        let d = JsonDecoder::new(schema());
        let records = vec![
            rec(
                0,
                r#"{"id":"a\nb \"q\"","amount":1.25,"n":null,"ts":"2026-03-01T12:00:00.123Z"}"#,
            ),
            rec(1, r#"{"id":"é","amount":-3,"n":7,"ts":1700000000000}"#),
        ];
        let out = d.decode(&records);
        assert!(out.failures.is_empty(), "{:?}", out.failures);
        let rows = encode_rows(&out.batch).expect("encode");
        assert_eq!(rows.len(), 2);
        let first: serde_json::Value =
            serde_json::from_slice(rows.row(0).expect("row 0")).expect("json");
        assert_eq!(first["id"], "a\nb \"q\"");
        assert_eq!(first["ts"], "2026-03-01T12:00:00.123Z");
        assert_eq!(first["n"], serde_json::Value::Null);
        assert_eq!(first["_headers"]["src"], "test");
        let second: serde_json::Value =
            serde_json::from_slice(rows.row(1).expect("row 1")).expect("json");
        assert_eq!(second["ts"], "2023-11-14T22:13:20Z");
        assert!(rows.row(2).is_err());
        assert!(rows.row(5).is_err());

        // Decoding the encoded record columns gives the same columns back.
        let again: Vec<RawRecord> = (0..rows.len())
            .map(|i| rec(i, std::str::from_utf8(rows.row(i).unwrap()).expect("utf8")))
            .collect();
        let back = d.decode(&again);
        assert!(back.failures.is_empty(), "{:?}", back.failures);
        for c in 0..4 {
            assert_eq!(back.batch.column(c), out.batch.column(c));
        }
    }

    use proptest::prelude::Strategy as _;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Any bytes: no panic, and every record is either a row or a failure, in order.
        #[test]
        fn arbitrary_payloads_are_accounted_for(
            payloads in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
                    "[{}\\[\\]\":,0-9a-z .\\-]{0,40}".prop_map(String::into_bytes),
                    (0..5usize).prop_map(|i| good(i).into_bytes()),
                ],
                0..40,
            )
        ) {
            let d = JsonDecoder::new(schema());
            let records: Vec<RawRecord> = payloads
                .iter()
                .enumerate()
                .map(|(i, p)| RawRecord { payload: p.clone(), ..rec(i, "") })
                .collect();
            let out = d.decode(&records);
            let mut seen: Vec<usize> = out.rows.iter().map(|&r| r as usize).collect();
            seen.extend(out.failures.iter().map(|f| f.index));
            seen.sort_unstable();
            proptest::prop_assert_eq!(seen, (0..records.len()).collect::<Vec<_>>());
            proptest::prop_assert_eq!(out.batch.num_rows(), out.rows.len());
            proptest::prop_assert!(out.rows.windows(2).all(|w| w[0] < w[1]));
        }
    }

    #[test]
    fn decode_cost() {
        // Prints the cost; timing is not asserted (noisy machines, debug builds).
        let d = JsonDecoder::new(schema());
        let records: Vec<_> = (0..1000).map(|i| rec(i, &good(i))).collect();
        let mut with_bad = records.clone();
        with_bad[500] = rec(500, r#"{"id":1,"amount":1}"#);
        for (name, batch) in [("clean", &records), ("1 bad", &with_bad)] {
            let _ = d.decode(batch);
            let start = Instant::now();
            let rounds = 20;
            for _ in 0..rounds {
                let _ = d.decode(batch);
            }
            let per_record = start.elapsed().as_secs_f64() * 1e6 / (rounds * 1000) as f64;
            println!("json decode ({name}): {per_record:.3} µs/record");
        }
    }
}

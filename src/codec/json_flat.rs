//! Fast path of the JSON decoder for flat records: one pass over each payload, straight into
//! Arrow column buffers, for schemas whose columns are all strings, booleans, integers, floats
//! or timestamps (the common event shape, such as `schemas/transaction.avsc`).
//!
//! It only accepts the plain, unambiguous subset of what arrow-json accepts: strings without
//! escapes, numbers in strict JSON grammar that convert exactly, each known field at most once,
//! no nested values, valid UTF-8, and every non-nullable field present. For that subset it
//! produces exactly what arrow-json produces (checked by a differential test). At the first
//! record outside it, decoding stops, and [`super::json::JsonDecoder`] hands that record and
//! the rest of the batch to arrow-json, which also classifies bad records. The general decoder
//! builds a tape of every value and then columns from the tape; skipping the tape halves the
//! decode cost, the largest cost of a JSON pipeline.
//!
//! Size: the code is under ~550 lines; the file passes the ~600-line mark only because of its
//! inline tests, which stay beside the code they pin down.

use std::sync::Arc;

use datafusion::arrow::array::builder::NullBufferBuilder;
use datafusion::arrow::array::timezone::Tz;
use datafusion::arrow::array::{
    ArrayRef, ArrowPrimitiveType, BooleanBuilder, PrimitiveArray, RecordBatch, StringBuilder,
};
use datafusion::arrow::buffer::ScalarBuffer;
use datafusion::arrow::compute::kernels::cast_utils::string_to_datetime;
use datafusion::arrow::datatypes::{
    DataType, Float32Type, Float64Type, Int32Type, Int64Type, SchemaRef, TimeUnit,
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType,
};

use crate::batch::RawRecord;

/// Most columns the fast path handles (the fields seen in a record are tracked in a `u64`).
const MAX_COLUMNS: usize = 64;

/// The type of one column, as the fast path reads it.
#[derive(Debug, Clone)]
enum Kind {
    Utf8,
    Boolean,
    Int32,
    Int64,
    Float32,
    Float64,
    /// Epoch values in `unit`, in the column's time zone `zone`; strings are parsed in `tz`
    /// like arrow-json does.
    Timestamp {
        unit: TimeUnit,
        zone: Option<Arc<str>>,
        tz: Tz,
    },
}

/// One value read from a record, converted for its column.
#[derive(Debug, Clone, Copy)]
enum Cell<'a> {
    /// The field is not in the record.
    Missing,
    Null,
    Str(&'a str),
    Bool(bool),
    Int(i64),
    F32(f32),
    F64(f64),
}

/// Why the fast path stopped; the record goes to arrow-json, which decides.
#[derive(Debug)]
struct Unsupported;

type Read<T> = Result<T, Unsupported>;

/// Decoder of flat JSON objects for one record schema.
#[derive(Debug, Clone)]
pub(super) struct FlatDecoder {
    schema: SchemaRef,
    kinds: Vec<Kind>,
    names: Vec<Box<[u8]>>,
    nullable: Vec<bool>,
}

/// What [`FlatDecoder::decode_subset`] made of a set of records.
#[derive(Debug)]
pub(super) struct FlatDecoded {
    /// The decoded rows, if any: one per entry of `taken`.
    pub batch: Option<RecordBatch>,
    /// Record indices of `batch`'s rows, ascending.
    pub taken: Vec<u32>,
    /// Record indices left for arrow-json, ascending.
    pub left: Vec<u32>,
}

impl FlatDecoder {
    /// A fast path for `schema`, or `None` if one of its columns is not a flat type it reads.
    pub(super) fn new(schema: &SchemaRef) -> Option<Self> {
        if schema.fields().len() > MAX_COLUMNS {
            return None;
        }
        let mut kinds = Vec::with_capacity(schema.fields().len());
        for field in schema.fields() {
            kinds.push(match field.data_type() {
                DataType::Utf8 => Kind::Utf8,
                DataType::Boolean => Kind::Boolean,
                DataType::Int32 => Kind::Int32,
                DataType::Int64 => Kind::Int64,
                DataType::Float32 => Kind::Float32,
                DataType::Float64 => Kind::Float64,
                DataType::Timestamp(unit, zone) => Kind::Timestamp {
                    unit: *unit,
                    zone: zone.clone(),
                    // arrow-json reads zone-less timestamps in UTC.
                    tz: zone.as_deref().unwrap_or("+00:00").parse().ok()?,
                },
                _ => return None,
            });
        }
        Some(FlatDecoder {
            schema: schema.clone(),
            kinds,
            names: schema
                .fields()
                .iter()
                .map(|f| f.name().as_bytes().into())
                .collect(),
            nullable: schema.fields().iter().map(|f| f.is_nullable()).collect(),
        })
    }

    /// Decodes, in order, every record at `idx` inside the fast path's subset and sets the
    /// others aside for arrow-json (which decodes them or isolates them as failures). A bad or
    /// unusual record costs only itself: the records after it stay on the fast path.
    pub(super) fn decode_subset(&self, records: &[RawRecord], idx: &[u32]) -> FlatDecoded {
        let mut columns: Vec<ColumnBuilder> = self
            .kinds
            .iter()
            .map(|k| ColumnBuilder::new(k, idx.len()))
            .collect();
        let mut cells = vec![Cell::Missing; self.kinds.len()];
        let mut taken = Vec::with_capacity(idx.len());
        let mut left = Vec::new();
        for &i in idx {
            let Some(record) = records.get(i as usize) else {
                left.push(i);
                continue;
            };
            cells.fill(Cell::Missing);
            // A record is read whole into `cells` before anything is appended, so one that
            // stops half-way leaves the builders untouched.
            if self.read_record(&record.payload, &mut cells).is_err() {
                left.push(i);
                continue;
            }
            for (column, cell) in columns.iter_mut().zip(&cells) {
                column.append(*cell);
            }
            taken.push(i);
        }
        if taken.is_empty() {
            return FlatDecoded {
                batch: None,
                taken,
                left,
            };
        }
        let arrays: Vec<ArrayRef> = columns
            .into_iter()
            .zip(&self.kinds)
            .map(|(c, k)| c.finish(k))
            .collect();
        match RecordBatch::try_new(self.schema.clone(), arrays) {
            Ok(batch) => FlatDecoded {
                batch: Some(batch),
                taken,
                left,
            },
            // Not expected (the builders follow the schema); arrow-json takes every record.
            Err(_) => FlatDecoded {
                batch: None,
                taken: Vec::new(),
                left: idx.to_vec(),
            },
        }
    }

    /// Reads one payload into `cells` (one per column), checking every conversion before
    /// anything is appended, so a record is taken whole or not at all.
    fn read_record<'a>(&self, payload: &'a [u8], cells: &mut [Cell<'a>]) -> Read<()> {
        let text = std::str::from_utf8(payload).map_err(|_| Unsupported)?;
        let mut p = Parser { text, at: 0 };
        p.skip_whitespace();
        p.expect(b'{')?;
        p.skip_whitespace();
        let mut seen = 0u64;
        let mut hint = 0;
        if p.peek() == Some(b'}') {
            p.at += 1;
        } else {
            loop {
                p.expect(b'"')?;
                let key = p.string_body()?.as_bytes();
                p.skip_whitespace();
                p.expect(b':')?;
                p.skip_whitespace();
                match self.column_of(key, hint) {
                    Some(column) => {
                        let bit = 1u64 << column;
                        if seen & bit != 0 {
                            return Err(Unsupported); // arrow-json keeps the last; rare
                        }
                        seen |= bit;
                        cells[column] = p.value(&self.kinds[column])?;
                        hint = column + 1;
                    }
                    None => p.skip_scalar()?,
                }
                p.skip_whitespace();
                match p.next() {
                    Some(b',') => p.skip_whitespace(),
                    Some(b'}') => break,
                    _ => return Err(Unsupported),
                }
            }
        }
        p.skip_whitespace();
        if p.at != text.len() {
            return Err(Unsupported);
        }
        for (cell, nullable) in cells.iter().zip(&self.nullable) {
            if !nullable && matches!(cell, Cell::Missing | Cell::Null) {
                return Err(Unsupported);
            }
        }
        Ok(())
    }

    /// The column named `key`, trying `hint` first (producers write fields in one order).
    fn column_of(&self, key: &[u8], hint: usize) -> Option<usize> {
        if self.names.get(hint).is_some_and(|n| **n == *key) {
            return Some(hint);
        }
        self.names.iter().position(|n| **n == *key)
    }
}

/// A cursor over one payload.
struct Parser<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Parser<'a> {
    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    fn peek(&self) -> Option<u8> {
        self.bytes().get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.at += 1;
        Some(b)
    }

    fn expect(&mut self, byte: u8) -> Read<()> {
        match self.next() {
            Some(b) if b == byte => Ok(()),
            _ => Err(Unsupported),
        }
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\n' | b'\r' | b'\t')) {
            self.at += 1;
        }
    }

    /// The characters of a string whose opening quote was read, up to and past its closing
    /// quote. Strings with escapes are left to arrow-json.
    fn string_body(&mut self) -> Read<&'a str> {
        let rest = self.bytes().get(self.at..).ok_or(Unsupported)?;
        let end = memchr::memchr2(b'"', b'\\', rest).ok_or(Unsupported)?;
        if rest[end] != b'"' {
            return Err(Unsupported);
        }
        // Both ends are at ASCII bytes, so at character boundaries.
        let s = self.text.get(self.at..self.at + end).ok_or(Unsupported)?;
        self.at += end + 1;
        Ok(s)
    }

    /// A number token in strict JSON grammar; whether it has a fraction or exponent.
    fn number(&mut self) -> Read<(&'a str, bool)> {
        let start = self.at;
        let digits = |p: &mut Self| {
            let from = p.at;
            while matches!(p.peek(), Some(b'0'..=b'9')) {
                p.at += 1;
            }
            p.at - from
        };
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.peek() {
            Some(b'0') => self.at += 1,
            Some(b'1'..=b'9') => {
                digits(self);
            }
            _ => return Err(Unsupported),
        }
        let mut fractional = false;
        if self.peek() == Some(b'.') {
            self.at += 1;
            if digits(self) == 0 {
                return Err(Unsupported);
            }
            fractional = true;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.at += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.at += 1;
            }
            if digits(self) == 0 {
                return Err(Unsupported);
            }
            fractional = true;
        }
        // arrow-json reads any run of these characters as one number: a run that goes on past
        // the grammar is its call.
        if matches!(
            self.peek(),
            Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
        ) {
            return Err(Unsupported);
        }
        let s = self.text.get(start..self.at).ok_or(Unsupported)?;
        Ok((s, fractional))
    }

    /// Reads `literal` (whose first byte is next).
    fn literal(&mut self, literal: &str) -> Read<()> {
        let end = self.at + literal.len();
        if self.bytes().get(self.at..end) == Some(literal.as_bytes()) {
            self.at = end;
            Ok(())
        } else {
            Err(Unsupported)
        }
    }

    /// The value of a field of `kind`, converted as arrow-json converts it.
    fn value(&mut self, kind: &Kind) -> Read<Cell<'a>> {
        match self.peek() {
            Some(b'n') => {
                self.literal("null")?;
                return Ok(Cell::Null);
            }
            Some(b't') if matches!(kind, Kind::Boolean) => {
                self.literal("true")?;
                return Ok(Cell::Bool(true));
            }
            Some(b'f') if matches!(kind, Kind::Boolean) => {
                self.literal("false")?;
                return Ok(Cell::Bool(false));
            }
            _ => {}
        }
        match (kind, self.peek()) {
            (Kind::Utf8, Some(b'"')) => {
                self.at += 1;
                Ok(Cell::Str(self.string_body()?))
            }
            (Kind::Timestamp { unit, tz, .. }, Some(b'"')) => {
                self.at += 1;
                let s = self.string_body()?;
                let date = string_to_datetime(tz, s).map_err(|_| Unsupported)?;
                let value = match unit {
                    TimeUnit::Second => Some(date.timestamp()),
                    TimeUnit::Millisecond => Some(date.timestamp_millis()),
                    TimeUnit::Microsecond => Some(date.timestamp_micros()),
                    TimeUnit::Nanosecond => date.timestamp_nanos_opt(),
                };
                value.map(Cell::Int).ok_or(Unsupported)
            }
            (Kind::Int32 | Kind::Int64 | Kind::Timestamp { .. }, Some(b'-' | b'0'..=b'9')) => {
                let (s, fractional) = self.number()?;
                if fractional {
                    return Err(Unsupported);
                }
                let value: i64 = s.parse().map_err(|_| Unsupported)?;
                if matches!(kind, Kind::Int32) && i32::try_from(value).is_err() {
                    return Err(Unsupported);
                }
                Ok(Cell::Int(value))
            }
            (Kind::Float32, Some(b'-' | b'0'..=b'9')) => {
                let (s, _) = self.number()?;
                let value: f32 = s.parse().map_err(|_| Unsupported)?;
                value
                    .is_finite()
                    .then_some(Cell::F32(value))
                    .ok_or(Unsupported)
            }
            (Kind::Float64, Some(b'-' | b'0'..=b'9')) => {
                let (s, _) = self.number()?;
                let value: f64 = s.parse().map_err(|_| Unsupported)?;
                value
                    .is_finite()
                    .then_some(Cell::F64(value))
                    .ok_or(Unsupported)
            }
            // A type arrow-json converts (a number in a string) or rejects: its call.
            _ => Err(Unsupported),
        }
    }

    /// Skips the value of a field not in the schema; nested values are left to arrow-json.
    fn skip_scalar(&mut self) -> Read<()> {
        match self.peek() {
            Some(b'"') => {
                self.at += 1;
                self.string_body().map(|_| ())
            }
            Some(b'-' | b'0'..=b'9') => self.number().map(|_| ()),
            Some(b't') => self.literal("true"),
            Some(b'f') => self.literal("false"),
            Some(b'n') => self.literal("null"),
            _ => Err(Unsupported),
        }
    }
}

/// The values of one column.
enum ColumnBuilder {
    Utf8(StringBuilder),
    Boolean(BooleanBuilder),
    Int(Vec<i64>, NullBufferBuilder),
    F32(Vec<f32>, NullBufferBuilder),
    F64(Vec<f64>, NullBufferBuilder),
}

impl ColumnBuilder {
    fn new(kind: &Kind, rows: usize) -> Self {
        let nulls = || NullBufferBuilder::new(rows);
        match kind {
            Kind::Utf8 => ColumnBuilder::Utf8(StringBuilder::with_capacity(rows, rows * 16)),
            Kind::Boolean => ColumnBuilder::Boolean(BooleanBuilder::with_capacity(rows)),
            Kind::Int32 | Kind::Int64 | Kind::Timestamp { .. } => {
                ColumnBuilder::Int(Vec::with_capacity(rows), nulls())
            }
            Kind::Float32 => ColumnBuilder::F32(Vec::with_capacity(rows), nulls()),
            Kind::Float64 => ColumnBuilder::F64(Vec::with_capacity(rows), nulls()),
        }
    }

    /// Appends a cell that [`FlatDecoder::read_record`] produced for this column's kind;
    /// anything else (null, missing) is a null.
    fn append(&mut self, cell: Cell<'_>) {
        fn push<T: Default>(values: &mut Vec<T>, nulls: &mut NullBufferBuilder, v: Option<T>) {
            match v {
                Some(v) => {
                    values.push(v);
                    nulls.append_non_null();
                }
                None => {
                    values.push(T::default());
                    nulls.append_null();
                }
            }
        }
        match self {
            ColumnBuilder::Utf8(b) => match cell {
                Cell::Str(s) => b.append_value(s),
                _ => b.append_null(),
            },
            ColumnBuilder::Boolean(b) => match cell {
                Cell::Bool(v) => b.append_value(v),
                _ => b.append_null(),
            },
            ColumnBuilder::Int(values, nulls) => {
                let v = match cell {
                    Cell::Int(v) => Some(v),
                    _ => None,
                };
                push(values, nulls, v);
            }
            ColumnBuilder::F32(values, nulls) => {
                let v = match cell {
                    Cell::F32(v) => Some(v),
                    _ => None,
                };
                push(values, nulls, v);
            }
            ColumnBuilder::F64(values, nulls) => {
                let v = match cell {
                    Cell::F64(v) => Some(v),
                    _ => None,
                };
                push(values, nulls, v);
            }
        }
    }

    /// The column as an array of `kind`'s type.
    fn finish(self, kind: &Kind) -> ArrayRef {
        fn primitive<T: ArrowPrimitiveType>(
            values: Vec<T::Native>,
            mut nulls: NullBufferBuilder,
        ) -> PrimitiveArray<T> {
            PrimitiveArray::new(ScalarBuffer::from(values), nulls.finish())
        }
        match (self, kind) {
            (ColumnBuilder::Utf8(mut b), _) => Arc::new(b.finish()),
            (ColumnBuilder::Boolean(mut b), _) => Arc::new(b.finish()),
            (ColumnBuilder::F32(v, n), _) => Arc::new(primitive::<Float32Type>(v, n)),
            (ColumnBuilder::F64(v, n), _) => Arc::new(primitive::<Float64Type>(v, n)),
            (ColumnBuilder::Int(v, n), Kind::Int32) => {
                // Every value was checked to fit in an i32.
                let v = v.into_iter().map(|x| x as i32).collect();
                Arc::new(primitive::<Int32Type>(v, n))
            }
            (ColumnBuilder::Int(v, n), Kind::Timestamp { unit, zone, .. }) => {
                let zone = zone.clone();
                match unit {
                    TimeUnit::Second => {
                        Arc::new(primitive::<TimestampSecondType>(v, n).with_timezone_opt(zone))
                    }
                    TimeUnit::Millisecond => Arc::new(
                        primitive::<TimestampMillisecondType>(v, n).with_timezone_opt(zone),
                    ),
                    TimeUnit::Microsecond => Arc::new(
                        primitive::<TimestampMicrosecondType>(v, n).with_timezone_opt(zone),
                    ),
                    TimeUnit::Nanosecond => {
                        Arc::new(primitive::<TimestampNanosecondType>(v, n).with_timezone_opt(zone))
                    }
                }
            }
            (ColumnBuilder::Int(v, n), _) => Arc::new(primitive::<Int64Type>(v, n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::datatypes::{Field, Schema};
    use proptest::prelude::*;

    use super::*;
    use crate::batch::Position;
    use crate::codec::json::{Decoded, JsonDecoder};

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("ok", DataType::Boolean, true),
            Field::new("n32", DataType::Int32, true),
            Field::new("n64", DataType::Int64, false),
            Field::new("f32", DataType::Float32, true),
            Field::new("f64", DataType::Float64, true),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                true,
            ),
            Field::new("naive", DataType::Timestamp(TimeUnit::Second, None), true),
            Field::new("note", DataType::Utf8, true),
        ]))
    }

    fn records(payloads: &[String]) -> Vec<RawRecord> {
        payloads
            .iter()
            .enumerate()
            .map(|(i, p)| RawRecord {
                key: None,
                payload: p.as_bytes().to_vec(),
                headers: Vec::new(),
                timestamp_ms: None,
                position: Position {
                    topic: Arc::from("t"),
                    partition: 0,
                    offset: i as i64,
                },
            })
            .collect()
    }

    /// The fields of a typical record, as (key, JSON value).
    fn typical_fields(i: usize) -> Vec<(String, String)> {
        [
            ("id", format!("\"tx-{i}\"")),
            ("ok", i.is_multiple_of(2).to_string()),
            ("n32", (i as i32 - 7).to_string()),
            ("n64", (i as i64 * 1_000_000_007).to_string()),
            ("f32", format!("{i}.25")),
            ("f64", format!("-{i}.5e-3")),
            ("ts", format!("\"2026-11-26T10:00:0{}.123Z\"", i % 10)),
            ("naive", "\"2026-11-26 10:00:00\"".to_string()),
            ("note", "null".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    fn object(fields: &[(String, String)]) -> String {
        let body: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        format!("{{{}}}", body.join(","))
    }

    fn typical(i: usize) -> String {
        object(&typical_fields(i))
    }

    /// A decimal just above the midpoint of two neighbouring f32 values: read directly it
    /// rounds up; read as f64 first, it lands on the midpoint and rounds to even.
    fn above_f32_midpoint(x: f32) -> String {
        let x = x.abs().max(f32::MIN_POSITIVE);
        let next = f32::from_bits(x.to_bits() + 1);
        let mid = format!("{}", (x as f64 + next as f64) / 2.0);
        if mid.contains('.') {
            format!("{mid}00000001")
        } else {
            format!("{mid}.00000001")
        }
    }

    /// A typical record with one change that may or may not leave the fast path's subset.
    fn perturbed() -> impl Strategy<Value = String> {
        let change =
            prop_oneof![
                (0..9usize, value()).prop_map(|(f, v)| (0, f, v)),
                (0..9usize).prop_map(|f| (1, f, String::new())),
                (0..9usize).prop_map(|f| (2, f, String::new())),
                value().prop_map(|v| (3, 0, v)),
                prop_oneof![Just(" 5"), Just("{}"), Just(","), Just("}"), Just(" \n")]
                    .prop_map(|e| (4, 0, e.to_string())),
            ];
        (0..50usize, change).prop_map(|(i, (how, field, v))| {
            let mut fields = typical_fields(i);
            match how {
                0 => fields[field].1 = v,
                1 => {
                    fields.remove(field);
                }
                2 => {
                    let again = fields[field].clone();
                    fields.push(again);
                }
                3 => fields.insert(2, ("other".to_string(), v)),
                _ => return format!("{}{v}", object(&fields)),
            }
            object(&fields)
        })
    }

    fn assert_same(fast: &Decoded, reference: &Decoded) {
        assert_eq!(fast.rows, reference.rows);
        assert_eq!(fast.batch, reference.batch);
        let failures = |d: &Decoded| -> Vec<(usize, crate::batch::ErrorClass, String)> {
            d.failures
                .iter()
                .map(|f| (f.index, f.class, f.message.clone()))
                .collect()
        };
        assert_eq!(failures(fast), failures(reference));
    }

    #[test]
    fn typical_records_take_the_fast_path_whole() {
        let payloads: Vec<String> = (0..100).map(typical).collect();
        let recs = records(&payloads);
        let idx: Vec<u32> = (0..100).collect();
        let flat = FlatDecoder::new(&schema()).expect("flat schema");
        let decoded = flat.decode_subset(&recs, &idx);
        assert_eq!(decoded.taken, idx);
        assert!(decoded.left.is_empty());
        assert_eq!(decoded.batch.expect("rows").num_rows(), 100);
        assert_same(
            &JsonDecoder::new(schema()).decode(&recs),
            &JsonDecoder::without_fast_path(schema()).decode(&recs),
        );
    }

    #[test]
    fn the_fast_path_sets_aside_only_the_records_it_leaves_to_arrow_json() {
        let mut payloads: Vec<String> = (0..10).map(typical).collect();
        payloads[4] = typical(4).replace("tx-4", r#"tx-\"4"#); // an escape
        payloads[7] = r#"{"id":"x"}"#.to_string(); // n64 missing: a failure
        let recs = records(&payloads);
        let idx: Vec<u32> = (0..10).collect();
        let decoded = FlatDecoder::new(&schema())
            .unwrap()
            .decode_subset(&recs, &idx);
        assert_eq!(decoded.taken, [0, 1, 2, 3, 5, 6, 8, 9]);
        assert_eq!(decoded.left, [4, 7]);
        let fast = JsonDecoder::new(schema()).decode(&recs);
        assert_eq!(fast.rows, [0, 1, 2, 3, 4, 5, 6, 8, 9]);
        assert_eq!(fast.failures[0].index, 7);
        assert_same(
            &fast,
            &JsonDecoder::without_fast_path(schema()).decode(&recs),
        );
    }

    #[test]
    fn nested_types_have_no_fast_path() {
        let nested = Arc::new(Schema::new(vec![Field::new(
            "tags",
            DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))),
            true,
        )]));
        assert!(FlatDecoder::new(&nested).is_none());
    }

    /// JSON values, plain and tricky, for any field.
    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("null".to_string()),
            Just("true".to_string()),
            Just("false".to_string()),
            Just("nul".to_string()),
            Just("{}".to_string()),
            Just(r#"{"a":[1,{"b":2}]}"#.to_string()),
            Just("[1, 2]".to_string()),
            any::<i64>().prop_map(|v| v.to_string()),
            any::<i32>().prop_map(|v| v.to_string()),
            any::<f32>().prop_map(|v| v.to_string()),
            any::<f64>().prop_map(|v| format!("{v:e}")),
            "-?[0-9]{1,3}(\\.[0-9]{0,3})?([eE][+-]?[0-9]{0,3})?",
            "[0-9+\\-.eE]{1,6}",
            Just("1e400".to_string()),
            Just("-0".to_string()),
            Just("00".to_string()),
            "\"[a-z0-9 é\u{1F600}]{0,8}\"",
            Just(r#""a\"b""#.to_string()),
            Just(r#""\u00e9""#.to_string()),
            Just("\"tab\there\"".to_string()),
            Just("\"12\"".to_string()),
            Just("\"2026-11-26T10:00:00.123Z\"".to_string()),
            Just("\"2026-11-26T10:00:00+02:00\"".to_string()),
            Just("\"2026-11-26 10:00:00\"".to_string()),
            Just("\"2026-11-26\"".to_string()),
            Just("\"not a time\"".to_string()),
            Just("1700000000000".to_string()),
            any::<f32>().prop_map(above_f32_midpoint),
        ]
    }

    /// Objects over the schema's fields and unknown ones, with odd spacing and endings.
    fn payload() -> impl Strategy<Value = String> {
        let key = prop_oneof![
            Just("id"),
            Just("ok"),
            Just("n32"),
            Just("n64"),
            Just("f32"),
            Just("f64"),
            Just("ts"),
            Just("naive"),
            Just("note"),
            Just("other"),
            Just("i\\u0064"),
        ];
        let space = prop_oneof![Just(""), Just(" "), Just("\n\t "), Just("\r")];
        let ending = prop_oneof![
            Just(""),
            Just(" "),
            Just(" 5"),
            Just("{}"),
            Just(","),
            Just("}")
        ];
        (
            proptest::collection::vec((key, value(), space.clone()), 0..12),
            space,
            ending,
        )
            .prop_map(|(fields, sp, end)| {
                let body: Vec<String> = fields
                    .iter()
                    .map(|(k, v, s)| format!("{s}\"{k}\"{s}:{s}{v}{s}"))
                    .collect();
                format!("{sp}{{{}}}{sp}{end}", body.join(","))
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        /// Whatever the input, the decoder with the fast path gives exactly what arrow-json
        /// alone gives: the same rows, values and failures.
        #[test]
        fn the_fast_path_matches_arrow_json(
            payloads in proptest::collection::vec(
                prop_oneof![2 => (0..50usize).prop_map(typical), 3 => perturbed(), 1 => payload()],
                1..30,
            )
        ) {
            let recs = records(&payloads);
            let fast = JsonDecoder::new(schema()).decode(&recs);
            let reference = JsonDecoder::without_fast_path(schema()).decode(&recs);
            prop_assert_eq!(&fast.rows, &reference.rows);
            prop_assert_eq!(&fast.batch, &reference.batch);
            for (a, b) in fast.failures.iter().zip(&reference.failures) {
                prop_assert_eq!((a.index, a.class, &a.message), (b.index, b.class, &b.message));
            }
            prop_assert_eq!(fast.failures.len(), reference.failures.len());
        }
    }
}

//! Which rows arrow-json's writer cannot write as JSON.
//!
//! arrow-json formats temporal values (timestamps, dates, times, durations, intervals) through
//! arrow-cast's display with `display_error(true)`: a value it cannot format (a Kafka timestamp
//! of `i64::MAX` ms, an event time of `1e30` s, a time of day past midnight) is written as the
//! text `ERROR: Cast error: …`, unescaped, inside the JSON string: invalid JSON that would be
//! counted as delivered. [`unencodable_rows`] finds those rows before encoding, with the same
//! formatter the writer uses, so the encoder can reject them as that row's failure (stage
//! `encode`) and write only what is valid.
//!
//! The check costs nothing for batches without temporal columns and a range scan for UTC
//! timestamps within years 0..=9999 (what `json_timestamp` writes itself); only other temporal
//! values are formatted once more here.

use std::collections::BTreeMap;

use datafusion::arrow::array::{Array, AsArray, OffsetSizeTrait};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

use super::json_timestamp::utc_in_range;

/// Rows of `batch` holding a value arrow-json cannot write, ascending, with why (naming the
/// column).
pub(super) fn unencodable_rows(batch: &RecordBatch) -> Vec<(usize, String)> {
    let mut bad: BTreeMap<usize, String> = BTreeMap::new();
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        if !may_fail(field.data_type()) {
            continue;
        }
        for (row, why) in bad_values(column.as_ref()) {
            bad.entry(row)
                .or_insert_with(|| format!("column `{}`: {why}", field.name()));
        }
    }
    bad.into_iter().collect()
}

/// Whether values of `data_type` go through arrow-cast's fallible display.
fn may_fail(data_type: &DataType) -> bool {
    match data_type {
        t if t.is_temporal() => true,
        DataType::Struct(fields) => fields.iter().any(|f| may_fail(f.data_type())),
        DataType::List(f)
        | DataType::LargeList(f)
        | DataType::ListView(f)
        | DataType::LargeListView(f)
        | DataType::FixedSizeList(f, _)
        | DataType::Map(f, _) => may_fail(f.data_type()),
        DataType::Dictionary(_, values) => may_fail(values),
        DataType::RunEndEncoded(_, values) => may_fail(values.data_type()),
        _ => false,
    }
}

/// Indices of `array` (valid slots only) whose value cannot be written, with why.
fn bad_values(array: &dyn Array) -> Vec<(usize, String)> {
    match array.data_type() {
        t if t.is_temporal() => bad_temporal(array),
        DataType::Struct(_) => {
            let array = array.as_struct();
            let mut bad: BTreeMap<usize, String> = BTreeMap::new();
            for child in array.columns() {
                if !may_fail(child.data_type()) {
                    continue;
                }
                for (i, why) in bad_values(child.as_ref()) {
                    if array.is_valid(i) {
                        bad.entry(i).or_insert(why);
                    }
                }
            }
            bad.into_iter().collect()
        }
        DataType::List(_) => bad_in_lists(array.as_list::<i32>()),
        DataType::LargeList(_) => bad_in_lists(array.as_list::<i64>()),
        DataType::FixedSizeList(_, size) => {
            let array = array.as_fixed_size_list();
            let size = (*size).max(1) as usize;
            parents(array, bad_values(array.values().as_ref()), |child| {
                Some(child / size)
            })
        }
        DataType::Map(_, _) => {
            let array = array.as_map();
            let offsets = array.value_offsets();
            let entries = array.entries();
            parents(array, bad_values(entries), |child| owner(offsets, child))
        }
        DataType::Dictionary(_, _) => {
            let array = array.as_any_dictionary();
            let bad_keys: BTreeMap<usize, String> =
                bad_values(array.values().as_ref()).into_iter().collect();
            if bad_keys.is_empty() {
                return Vec::new();
            }
            let keys = array.normalized_keys();
            keys.iter()
                .enumerate()
                .filter(|(i, _)| array.is_valid(*i))
                .filter_map(|(i, key)| Some((i, bad_keys.get(key)?.clone())))
                .collect()
        }
        // Views and run-end encoding are not produced by the SQL stage; arrow-json writes them
        // through the same display if they ever appear, so check them the slow, sure way.
        _ => bad_temporal(array),
    }
}

fn bad_in_lists<O: OffsetSizeTrait>(
    array: &datafusion::arrow::array::GenericListArray<O>,
) -> Vec<(usize, String)> {
    let offsets = array.value_offsets();
    parents(array, bad_values(array.values().as_ref()), |child| {
        owner(offsets, child)
    })
}

/// The row of a list-like array whose value range holds child index `child`.
fn owner<O: OffsetSizeTrait>(offsets: &[O], child: usize) -> Option<usize> {
    let row = offsets.partition_point(|o| o.as_usize() <= child);
    row.checked_sub(1)
}

/// Maps bad child indices to their parents' rows, keeping valid parents only.
fn parents(
    parent: &dyn Array,
    bad_children: Vec<(usize, String)>,
    row_of: impl Fn(usize) -> Option<usize>,
) -> Vec<(usize, String)> {
    let mut bad: BTreeMap<usize, String> = BTreeMap::new();
    for (child, why) in bad_children {
        if let Some(row) = row_of(child)
            && row < parent.len()
            && parent.is_valid(row)
        {
            bad.entry(row).or_insert(why);
        }
    }
    bad.into_iter().collect()
}

/// Valid slots of a temporal (or other displayed) array that arrow-cast cannot format.
fn bad_temporal(array: &dyn Array) -> Vec<(usize, String)> {
    if utc_in_range(array) {
        return Vec::new();
    }
    // The writer's own options, less `display_error`, so a failure is an error here.
    let options = FormatOptions::new();
    let formatter = match ArrayFormatter::try_new(array, &options) {
        Ok(f) => f,
        // The writer would fail the whole batch the same way; that surfaces as its error.
        Err(_) => return Vec::new(),
    };
    let mut text = String::new();
    let mut bad = Vec::new();
    for i in 0..array.len() {
        if array.is_null(i) {
            continue;
        }
        text.clear();
        if let Err(e) = formatter.value(i).write(&mut text) {
            bad.push((i, format!("cannot be written as JSON: {e}")));
        }
    }
    bad
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{
        ArrayRef, Date64Array, Int32Array, ListArray, StructArray, Time64MicrosecondArray,
        TimestampMillisecondArray, TimestampSecondArray,
    };
    use datafusion::arrow::buffer::OffsetBuffer;
    use datafusion::arrow::datatypes::{Field, Fields, Schema};
    use proptest::prelude::*;

    use super::*;
    use crate::codec::json::encode_rows;

    fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
        let fields: Vec<Field> = columns
            .iter()
            .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
            .collect();
        RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            columns.into_iter().map(|(_, a)| a).collect(),
        )
        .unwrap()
    }

    /// Every encoded row parses as JSON; rows that could not be encoded are exactly `bad`.
    fn assert_valid_except(batch: &RecordBatch, bad: &[usize]) {
        let rows = encode_rows(batch).expect("encode");
        assert_eq!(rows.len(), batch.num_rows());
        let failed: Vec<usize> = rows.failed().iter().map(|(r, _)| *r).collect();
        assert_eq!(failed, bad);
        for i in 0..rows.len() {
            match rows.row(i) {
                Ok(json) => {
                    let value: serde_json::Value =
                        serde_json::from_slice(json).unwrap_or_else(|e| {
                            panic!("row {i}: {e}: {}", String::from_utf8_lossy(json))
                        });
                    assert!(value.is_object());
                }
                Err(why) => assert!(bad.contains(&i), "row {i}: {why}"),
            }
        }
    }

    #[test]
    fn a_kafka_timestamp_of_i64_max_is_the_rows_failure_not_text_in_the_output() {
        let ts =
            TimestampMillisecondArray::from(vec![Some(1_700_000_000_000), Some(i64::MAX), None])
                .with_timezone("UTC");
        let id = Int32Array::from(vec![1, 2, 3]);
        let b = batch(vec![("id", Arc::new(id)), ("_timestamp", Arc::new(ts))]);
        assert_valid_except(&b, &[1]);
        let rows = encode_rows(&b).unwrap();
        let why = rows.row(1).unwrap_err();
        assert!(why.contains("`_timestamp`"), "{why}");
        // The good rows are unchanged, nulls included.
        assert_eq!(
            rows.row(0).unwrap(),
            br#"{"id":1,"_timestamp":"2023-11-14T22:13:20Z"}"#
        );
        assert_eq!(rows.row(2).unwrap(), br#"{"id":3,"_timestamp":null}"#);
    }

    #[test]
    fn year_300000_and_1e30_seconds_are_refused_in_every_zone() {
        // 1e30 s saturates to i64::MAX when cast; the year 300000 is past chrono's range.
        let year_300000 = 300_000i64 * 365 * 86_400;
        for zone in [None, Some("UTC"), Some("Europe/Berlin"), Some("+05:30")] {
            let ts = TimestampSecondArray::from(vec![0, year_300000, i64::MAX, -year_300000]);
            let ts = match zone {
                Some(z) => ts.with_timezone(z),
                None => ts,
            };
            assert_valid_except(&batch(vec![("t", Arc::new(ts))]), &[1, 2, 3]);
        }
    }

    #[test]
    fn dates_times_nested_lists_and_structs_are_checked() {
        let date = Date64Array::from(vec![0, i64::MAX]);
        // A time of day past 24 h cannot be formatted.
        let time = Time64MicrosecondArray::from(vec![90_000_000_000, 1_000]);
        assert_valid_except(&batch(vec![("d", Arc::new(date))]), &[1]);
        assert_valid_except(&batch(vec![("t", Arc::new(time))]), &[0]);

        // A list of timestamps: row 1 holds the bad one.
        let values = TimestampMillisecondArray::from(vec![0, 1, i64::MAX, 2]).with_timezone("UTC");
        let field = Arc::new(Field::new_list_field(values.data_type().clone(), true));
        let list = ListArray::new(
            field,
            OffsetBuffer::from_lengths([2, 2, 0]),
            Arc::new(values),
            None,
        );
        assert_valid_except(&batch(vec![("l", Arc::new(list))]), &[1]);

        // A struct holding a timestamp: row 0 is bad.
        let inner = TimestampMillisecondArray::from(vec![i64::MAX, 0]).with_timezone("UTC");
        let fields = Fields::from(vec![Field::new("at", inner.data_type().clone(), true)]);
        let s = StructArray::new(fields, vec![Arc::new(inner) as ArrayRef], None);
        assert_valid_except(&batch(vec![("s", Arc::new(s))]), &[0]);
    }

    #[test]
    fn in_range_utc_timestamps_need_no_formatting() {
        let ts = TimestampMillisecondArray::from(vec![0, 1_700_000_000_000]).with_timezone("UTC");
        assert!(unencodable_rows(&batch(vec![("t", Arc::new(ts))])).is_empty());
    }

    proptest! {
        /// Whatever the values, every row the encoder writes parses with serde_json (an
        /// independent parser) and every other row is reported as failed.
        #[test]
        fn every_emitted_row_is_valid_json(
            values in proptest::collection::vec(any::<i64>(), 1..40),
            floats in proptest::collection::vec(any::<f64>(), 40),
            zone in prop_oneof![Just(None), Just(Some("UTC")), Just(Some("Asia/Tokyo"))],
            text in "\\PC{0,12}",
        ) {
            let n = values.len();
            let ts = TimestampMillisecondArray::from(values.clone());
            let ts = match zone { Some(z) => ts.with_timezone(z), None => ts };
            let secs = TimestampSecondArray::from(values.clone()).with_timezone("UTC");
            let date = Date64Array::from(values.clone());
            let amount = datafusion::arrow::array::Float64Array::from(floats[..n].to_vec());
            let label = datafusion::arrow::array::StringArray::from(vec![text.as_str(); n]);
            let b = batch(vec![
                ("ts", Arc::new(ts)),
                ("secs", Arc::new(secs)),
                ("date", Arc::new(date)),
                ("amount", Arc::new(amount)),
                ("label", Arc::new(label)),
            ]);
            let rows = encode_rows(&b).expect("encode");
            prop_assert_eq!(rows.len(), n);
            for i in 0..n {
                if let Ok(json) = rows.row(i) {
                    let parsed = serde_json::from_slice::<serde_json::Value>(json);
                    prop_assert!(parsed.is_ok(), "row {}: {}", i, String::from_utf8_lossy(json));
                }
            }
        }
    }
}

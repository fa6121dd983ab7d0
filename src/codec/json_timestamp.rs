//! JSON output of UTC timestamps without arrow-cast's time-zone formatting.
//!
//! arrow-json writes a `Timestamp(_, Some(tz))` value through arrow-cast's display: a chrono-tz
//! offset lookup and chrono's `fmt`-based RFC 3339 writer per value, about 2% of a scoring
//! pipeline's CPU. For a UTC zone the offset is always zero, so [`UtcTimestamps`] writes the
//! same text directly: `"YYYY-MM-DDTHH:MM:SS[.fff|.ffffff|.fffffffff]Z"`, the fraction as
//! chrono's `SecondsFormat::AutoSi` chooses it. Other zones, and arrays holding a value outside
//! years 0..=9999, keep arrow-json's encoder.

use chrono::{Datelike, NaiveDate};
use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{
    DataType, FieldRef, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType,
};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::json::writer::{Encoder, EncoderFactory, EncoderOptions, NullableEncoder};

/// Zone names whose offset is zero at every instant.
const UTC_ZONES: [&str; 3] = ["UTC", "Etc/UTC", "+00:00"];

/// Seconds since the epoch of 0000-01-01T00:00:00Z and of 9999-12-31T23:59:59Z: the years
/// RFC 3339 writes with four digits and no sign.
const FIRST_SECOND: i64 = -62_167_219_200;
const LAST_SECOND: i64 = 253_402_300_799;

/// Encoder factory for arrow-json's writer: UTC timestamps written directly.
#[derive(Debug, Default)]
pub(super) struct UtcTimestamps;

impl EncoderFactory for UtcTimestamps {
    fn make_default_encoder<'a>(
        &self,
        _field: &'a FieldRef,
        array: &'a dyn Array,
        _options: &'a EncoderOptions,
    ) -> Result<Option<NullableEncoder<'a>>, ArrowError> {
        let Some((unit, values)) = utc_values(array) else {
            return Ok(None);
        };
        if !in_range(unit, values) {
            return Ok(None);
        }
        let per_second = units_per_second(unit);
        let encoder = UtcTimestampEncoder {
            values,
            per_second,
            day: None,
        };
        Ok(Some(NullableEncoder::new(
            Box::new(encoder),
            array.nulls().cloned(),
        )))
    }
}

/// The unit and values of a timestamp array in a UTC zone.
fn utc_values(array: &dyn Array) -> Option<(TimeUnit, &[i64])> {
    let DataType::Timestamp(unit, Some(zone)) = array.data_type() else {
        return None;
    };
    if !UTC_ZONES.contains(&zone.as_ref()) {
        return None;
    }
    let values: &[i64] = match unit {
        TimeUnit::Second => array.as_primitive::<TimestampSecondType>().values(),
        TimeUnit::Millisecond => array.as_primitive::<TimestampMillisecondType>().values(),
        TimeUnit::Microsecond => array.as_primitive::<TimestampMicrosecondType>().values(),
        TimeUnit::Nanosecond => array.as_primitive::<TimestampNanosecondType>().values(),
    };
    Some((*unit, values))
}

/// Whether every value lies in years 0..=9999. Null slots hold arbitrary values; checking them
/// too only costs a rare fallback.
fn in_range(unit: TimeUnit, values: &[i64]) -> bool {
    let per_second = units_per_second(unit);
    values.iter().all(|&v| {
        let seconds = v.div_euclid(per_second);
        (FIRST_SECOND..=LAST_SECOND).contains(&seconds)
    })
}

/// Whether `array` is a UTC timestamp array this module writes itself (so every value can be
/// written as JSON).
pub(super) fn utc_in_range(array: &dyn Array) -> bool {
    utc_values(array).is_some_and(|(unit, values)| in_range(unit, values))
}

fn units_per_second(unit: TimeUnit) -> i64 {
    match unit {
        TimeUnit::Second => 1,
        TimeUnit::Millisecond => 1_000,
        TimeUnit::Microsecond => 1_000_000,
        TimeUnit::Nanosecond => 1_000_000_000,
    }
}

struct UtcTimestampEncoder<'a> {
    values: &'a [i64],
    per_second: i64,
    /// The last day written (days since the epoch) and its `YYYY-MM-DD`: a batch's timestamps
    /// mostly share a day, so the calendar arithmetic runs once per day, not once per value.
    day: Option<(i64, [u8; 10])>,
}

const SECONDS_PER_DAY: i64 = 86_400;
/// Days from 0001-01-01 (chrono's day 1 of the common era) to 1970-01-01.
const EPOCH_DAYS_FROM_CE: i64 = 719_163;

impl UtcTimestampEncoder<'_> {
    /// `YYYY-MM-DD` of `day` days since the epoch; None outside chrono's range (never for the
    /// years checked when the encoder was made).
    fn date(&mut self, day: i64) -> Option<[u8; 10]> {
        if let Some((cached, text)) = self.day
            && cached == day
        {
            return Some(text);
        }
        let date =
            NaiveDate::from_num_days_from_ce_opt(i32::try_from(day + EPOCH_DAYS_FROM_CE).ok()?)?;
        let mut text = Vec::with_capacity(10);
        digits(&mut text, date.year() as u32, 4);
        text.push(b'-');
        digits(&mut text, date.month(), 2);
        text.push(b'-');
        digits(&mut text, date.day(), 2);
        let text: [u8; 10] = text.try_into().ok()?;
        self.day = Some((day, text));
        Some(text)
    }
}

impl Encoder for UtcTimestampEncoder<'_> {
    fn encode(&mut self, idx: usize, out: &mut Vec<u8>) {
        let v = self.values[idx];
        let seconds = v.div_euclid(self.per_second);
        // 0..per_second units, scaled to nanoseconds.
        let nanos = (v.rem_euclid(self.per_second) * (1_000_000_000 / self.per_second)) as u32;
        let Some(date) = self.date(seconds.div_euclid(SECONDS_PER_DAY)) else {
            out.extend_from_slice(b"null");
            return;
        };
        // Unix time has no leap seconds: every day is 86 400 of them.
        let second_of_day = seconds.rem_euclid(SECONDS_PER_DAY) as u32;
        out.push(b'"');
        out.extend_from_slice(&date);
        out.push(b'T');
        digits(out, second_of_day / 3600, 2);
        out.push(b':');
        digits(out, second_of_day / 60 % 60, 2);
        out.push(b':');
        digits(out, second_of_day % 60, 2);
        // chrono's AutoSi: as few of 3, 6 or 9 digits as hold every non-zero one.
        if nanos != 0 {
            out.push(b'.');
            if nanos.is_multiple_of(1_000_000) {
                digits(out, nanos / 1_000_000, 3);
            } else if nanos.is_multiple_of(1_000) {
                digits(out, nanos / 1_000, 6);
            } else {
                digits(out, nanos, 9);
            }
        }
        out.extend_from_slice(b"Z\"");
    }
}

/// `value` in decimal, zero-padded to `width` digits (`value` has at most `width`).
fn digits(out: &mut Vec<u8>, mut value: u32, width: usize) {
    let start = out.len();
    out.resize(start + width, b'0');
    for slot in out[start..].iter_mut().rev() {
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{
        ArrayRef, RecordBatch, TimestampMicrosecondArray, TimestampMillisecondArray,
        TimestampNanosecondArray, TimestampSecondArray,
    };
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::arrow::json::WriterBuilder;
    use proptest::prelude::*;

    use super::*;

    fn array(unit: TimeUnit, zone: &str, values: Vec<Option<i64>>) -> ArrayRef {
        match unit {
            TimeUnit::Second => Arc::new(TimestampSecondArray::from(values).with_timezone(zone)),
            TimeUnit::Millisecond => {
                Arc::new(TimestampMillisecondArray::from(values).with_timezone(zone))
            }
            TimeUnit::Microsecond => {
                Arc::new(TimestampMicrosecondArray::from(values).with_timezone(zone))
            }
            TimeUnit::Nanosecond => {
                Arc::new(TimestampNanosecondArray::from(values).with_timezone(zone))
            }
        }
    }

    /// Line-delimited JSON of `column` as one field, with or without the factory.
    fn write(column: &ArrayRef, fast: bool) -> String {
        let schema = Schema::new(vec![Field::new("t", column.data_type().clone(), true)]);
        let batch = RecordBatch::try_new(Arc::new(schema), vec![column.clone()]).unwrap();
        let mut buf = Vec::new();
        {
            let mut builder = WriterBuilder::new().with_explicit_nulls(true);
            if fast {
                builder = builder.with_encoder_factory(Arc::new(UtcTimestamps));
            }
            let mut writer =
                builder.build::<_, datafusion::arrow::json::writer::LineDelimited>(&mut buf);
            writer.write(&batch).unwrap();
            writer.finish().unwrap();
        }
        String::from_utf8(buf).unwrap()
    }

    const UNITS: [TimeUnit; 4] = [
        TimeUnit::Second,
        TimeUnit::Millisecond,
        TimeUnit::Microsecond,
        TimeUnit::Nanosecond,
    ];

    #[test]
    fn writes_what_arrow_json_writes_at_the_edges() {
        for unit in UNITS {
            let per = units_per_second(unit);
            let edges = vec![
                Some(0),
                None,
                Some(-1),
                Some(1),
                Some(1_733_400_000 * per + per / 2),
                Some(FIRST_SECOND.saturating_mul(per)),
                Some(LAST_SECOND.saturating_mul(per).saturating_add(per - 1)),
                Some(951_782_400 * per), // 2000-02-29
            ];
            for zone in UTC_ZONES {
                let column = array(unit, zone, edges.clone());
                assert_eq!(
                    write(&column, true),
                    write(&column, false),
                    "{unit:?} {zone}"
                );
            }
        }
        // The output the pipelines publish: milliseconds in UTC.
        let column = array(TimeUnit::Millisecond, "UTC", vec![Some(1_733_400_000_123)]);
        assert_eq!(
            write(&column, true),
            "{\"t\":\"2024-12-05T12:00:00.123Z\"}\n"
        );
    }

    #[test]
    fn other_zones_and_out_of_range_values_keep_arrow_json() {
        let column = array(TimeUnit::Second, "+01:00", vec![Some(0)]);
        assert_eq!(
            write(&column, true),
            "{\"t\":\"1970-01-01T01:00:00+01:00\"}\n"
        );
        let far = array(
            TimeUnit::Second,
            "UTC",
            vec![Some(LAST_SECOND + 1), Some(0)],
        );
        assert_eq!(write(&far, true), write(&far, false));
        let field: FieldRef = Arc::new(Field::new("t", far.data_type().clone(), true));
        let options = EncoderOptions::default();
        assert!(
            UtcTimestamps
                .make_default_encoder(&field, far.as_ref(), &options)
                .unwrap()
                .is_none()
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn matches_arrow_json(
            unit in 0usize..4,
            zone in 0usize..UTC_ZONES.len(),
            values in proptest::collection::vec(
                proptest::option::weighted(0.9, FIRST_SECOND..=LAST_SECOND),
                1..40,
            ),
            fractions in proptest::collection::vec(0i64..1_000_000_000, 40),
        ) {
            let unit = UNITS[unit];
            let per = units_per_second(unit);
            let values: Vec<Option<i64>> = values
                .iter()
                .zip(&fractions)
                // Nanoseconds reach only the years 1677..2262: others become nulls.
                .map(|(v, f)| v.and_then(|s| s.checked_mul(per)?.checked_add(f % per)))
                .collect();
            let column = array(unit, UTC_ZONES[zone], values);
            prop_assert_eq!(write(&column, true), write(&column, false));
        }

        /// Values a few hours apart, as a stream's are: most share the previous value's day
        /// (the cached date), some cross midnight, before and after the epoch.
        #[test]
        fn matches_arrow_json_across_nearby_days(
            start in -200_000i64..200_000,
            steps in proptest::collection::vec(0i64..30_000, 1..60),
        ) {
            let mut second = start * SECONDS_PER_DAY / 7;
            let values: Vec<Option<i64>> = steps
                .iter()
                .map(|step| {
                    second += step;
                    Some(second * 1_000 + step % 1_000)
                })
                .collect();
            let column = array(TimeUnit::Millisecond, "UTC", values);
            prop_assert_eq!(write(&column, true), write(&column, false));
        }
    }
}

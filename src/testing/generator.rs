//! Synthetic card transactions (about 300 bytes of JSON, 12 fields) for the demo, tests and
//! benchmarks, with an optional share of malformed records of several kinds.

use rand::Rng;
use rand::rngs::SmallRng;

const CATEGORIES: &[&str] = &[
    "grocery",
    "electronics",
    "travel",
    "restaurant",
    "fuel",
    "jewelry",
    "gaming",
];
const COUNTRIES: &[&str] = &["US", "GB", "DE", "FR", "NL", "BR", "NG", "SG"];
const CHANNELS: &[&str] = &["pos", "online", "atm"];

/// Event time base: 2026-11-26T00:00:00Z in milliseconds.
const BASE_TIME_MS: i64 = 1_795_651_200_000;

/// One well-formed transaction with id `id`.
pub fn transaction(rng: &mut SmallRng, id: u64) -> Vec<u8> {
    let amount: f64 = if rng.random_bool(0.03) {
        rng.random_range(2000.0..9000.0)
    } else {
        rng.random_range(1.0..250.0)
    };
    let channel = CHANNELS[rng.random_range(0..CHANNELS.len())];
    let ms = BASE_TIME_MS + (id as i64) * 37;
    let secs = ms / 1000;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    format!(
        concat!(
            "{{\"transaction_id\":\"tx-{:012}\",\"card_id\":\"card-{:06}\",\"merchant_id\":\"m-{:05}\",",
            "\"merchant_category\":\"{}\",\"amount\":{:.2},\"currency\":\"USD\",\"country\":\"{}\",",
            "\"channel\":\"{}\",\"card_present\":{},\"event_time\":\"2026-11-26T{:02}:{:02}:{:02}.{:03}Z\",",
            "\"customer_age\":{},\"distance_from_home_km\":{:.1}}}"
        ),
        id,
        rng.random_range(0..50_000),
        rng.random_range(0..5_000),
        CATEGORIES[rng.random_range(0..CATEGORIES.len())],
        amount,
        COUNTRIES[rng.random_range(0..COUNTRIES.len())],
        channel,
        channel != "online",
        h,
        m,
        s,
        ms % 1000,
        rng.random_range(18..90),
        if rng.random_bool(0.05) {
            rng.random_range(500.0..9000.0)
        } else {
            rng.random_range(0.0..40.0)
        },
    )
    .into_bytes()
}

/// A malformed record (truncated JSON, wrong type, missing field, not an object), chosen by id.
pub fn malformed(rng: &mut SmallRng, id: u64) -> Vec<u8> {
    let good = transaction(rng, id);
    match id % 4 {
        0 => good[..good.len() / 2].to_vec(),
        1 => String::from_utf8_lossy(&good)
            .replacen("\"amount\":", "\"amount\":\"lots\",\"x\":", 1)
            .into_bytes(),
        2 => {
            let text = String::from_utf8_lossy(&good);
            let start = text.find("\"card_id\"").unwrap_or(0);
            let end = text[start..].find(',').map_or(start, |e| start + e + 1);
            format!("{}{}", &text[..start], &text[end..]).into_bytes()
        }
        _ => format!("[\"tx-{id}\"]").into_bytes(),
    }
}

/// Deterministically decides whether record `id` is malformed, for a share `rate` in 0..=1.
pub fn is_malformed(id: u64, rate: f64) -> bool {
    if rate <= 0.0 {
        return false;
    }
    let period = (1.0 / rate).round().max(1.0) as u64;
    id % period == period - 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn transactions_are_json_of_about_300_bytes() {
        let mut rng = SmallRng::seed_from_u64(1);
        let t = transaction(&mut rng, 42);
        let v: serde_json::Value = serde_json::from_slice(&t).unwrap();
        assert_eq!(v.as_object().unwrap().len(), 12);
        assert!((250..350).contains(&t.len()), "{}", t.len());
    }

    #[test]
    fn malformed_records_do_not_parse_as_valid_transactions() {
        let mut rng = SmallRng::seed_from_u64(1);
        for id in 0..4 {
            let m = malformed(&mut rng, id);
            let parsed: Result<serde_json::Value, _> = serde_json::from_slice(&m);
            let ok = parsed.as_ref().is_ok_and(|v| {
                v.get("card_id").is_some() && v.get("amount").is_some_and(|a| a.is_number())
            });
            assert!(
                !ok,
                "record {id} looks valid: {}",
                String::from_utf8_lossy(&m)
            );
        }
        assert_eq!((0..1000).filter(|i| is_malformed(*i, 0.01)).count(), 10);
    }
}

//! Entry points for the fuzz targets in `fuzz/`; not an API.
//!
//! Each function takes the bytes libFuzzer generates, feeds them to one parser of outside
//! input the way the pipeline or the gateway does, and returns nothing: a panic (including a
//! failed check of the parser's documented contract below), an abort, a hang or running out
//! of memory is the finding. `tests/integration/fuzz_regressions.rs` replays the seed corpora
//! (`fuzz/corpus/<target>/`) and every saved crash (`tests/data/fuzz-regressions/<target>/`)
//! through the same functions; [`TARGETS`] lists them by target name.
//!
//! Fixed inputs the parsers need besides the bytes (record schemas, a Schema Registry, JWT
//! keys) are built once per process. The Confluent target's writer schemas come from a
//! registry stand-in on 127.0.0.1 that is asked once, at start-up; decoding itself never
//! touches the network.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::{Field, Schema};

use crate::batch::{Position, RawRecord};
use crate::codec::avro::AvroDecoder;
use crate::codec::json::{Decoded, JsonDecoder};
use crate::codec::schema::{avro_to_fields, column_type};
use crate::gateway::jwt::JwtVerifier;
use crate::gateway::oip_codec::{OutputTensor, decode_request, encode_response};
use crate::gateway::openai_body::OpenAiBody;
use crate::spec::{AvroWire, ColumnType, JwtAlgorithm, JwtSpec, SchemaRegistrySpec, Secret};

/// A fuzz target: its name (the file `fuzz/fuzz_targets/<name>.rs` and the corpus folder) and
/// its entry point.
pub type Target = (&'static str, fn(&[u8]));

/// Every target.
pub const TARGETS: &[Target] = &[
    ("json_records", json_records),
    ("avro_plain", avro_plain),
    ("avro_confluent", avro_confluent),
    ("spec_pipeline", spec_pipeline),
    ("spec_gateway", spec_gateway),
    ("oip_request", oip_request),
    ("openai_body", openai_body),
    ("jwt", jwt),
];

/// Most records one input is split into.
const MAX_RECORDS: usize = 256;

/// The demo transaction schema (flat columns: the JSON decoder's fast path).
const TRANSACTION_AVSC: &str = include_str!("../schemas/transaction.avsc");

/// A nested record (records, unions, arrays, maps: the arrow-json path).
const ORDER_AVSC: &str = r#"{
  "type": "record", "name": "Order",
  "fields": [
    {"name": "order_id", "type": "string"},
    {"name": "merchant", "type": {"type": "record", "name": "Merchant", "fields": [
      {"name": "id", "type": "string"},
      {"name": "category", "type": ["null", "string"]},
      {"name": "geo", "type": ["null", {"type": "record", "name": "Geo", "fields": [
        {"name": "lat", "type": "double"}, {"name": "lon", "type": "double"}]}]}]}},
    {"name": "items", "type": ["null", {"type": "array", "items": "string"}]},
    {"name": "attributes", "type": ["null", {"type": "map", "values": "string"}]}
  ]
}"#;

/// Writer schema id 2 of the registry stand-in: the transaction evolved (a float amount, an
/// extra field, a dropped optional field, an enum symbol the reader lacks).
const EVOLVED_TRANSACTION_AVSC: &str = r#"{
  "type": "record", "name": "Transaction", "namespace": "io.streamgate.examples",
  "fields": [
    {"name": "transaction_id", "type": "string"},
    {"name": "card_id", "type": "string"},
    {"name": "merchant_id", "type": "string"},
    {"name": "merchant_category", "type": "string"},
    {"name": "amount", "type": "float"},
    {"name": "currency", "type": "string"},
    {"name": "country", "type": "string"},
    {"name": "channel", "type": {"type": "enum", "name": "Channel",
      "symbols": ["pos", "online", "atm", "kiosk"]}},
    {"name": "card_present", "type": "boolean"},
    {"name": "event_time", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    {"name": "customer_age", "type": ["null", "int"], "default": null},
    {"name": "risk_hint", "type": "string"}
  ]
}"#;

/// HS256 secret, issuer and audience of the JWT verifiers (`fuzz/make_seeds.py` signs seeds
/// with them).
const JWT_SECRET: &str = "streamgate-fuzz-hs256-secret";
const JWT_ISSUER: &str = "https://idp.example";
const JWT_AUDIENCE: &str = "streamgate";

/// Public half of the fuzzing-only P-256 key of `fuzz/make_seeds.py`, as PEM and as a JWKS.
const EC_PUBLIC_PEM: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAED+fCKCLGIK87q9jaslgpdtgGFKWX
OiZWEOBOrS+kIMkhRkOkXs8A/y48cdf1041Z+Hrgm4xlCERjwdlKd6EyDw==
-----END PUBLIC KEY-----
";
const EC_JWKS: &str = r#"{"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256", "use": "sig",
  "x": "D-fCKCLGIK87q9jaslgpdtgGFKWXOiZWEOBOrS-kIMk",
  "y": "IUZDpF7PAP8uPHHX9dONWfh64JuMZQhEY8HZSnehMg8"}]}"#;

// ------------------------------------------------------------------------------------------
// JSON records

/// JSON records: the input split at `\n` into records, decoded with a flat schema (the
/// transaction), a nested one and one column of every declarable type. Checks that every
/// record comes out as exactly one row or one failure, in order.
pub fn json_records(data: &[u8]) {
    let records = split_records(data);
    for decoder in json_decoders() {
        check_decoded(&decoder.decode(&records), records.len());
    }
}

fn json_decoders() -> &'static [JsonDecoder] {
    static DECODERS: OnceLock<Vec<JsonDecoder>> = OnceLock::new();
    DECODERS.get_or_init(|| {
        let typed = [
            ("b", ColumnType::Boolean),
            ("i32", ColumnType::Int32),
            ("i64", ColumnType::Int64),
            ("f32", ColumnType::Float32),
            ("f64", ColumnType::Float64),
            ("s", ColumnType::String),
            ("ts", ColumnType::Timestamp),
            ("d", ColumnType::Date),
        ]
        .into_iter()
        .map(|(name, t)| Field::new(name, column_type(t), true))
        .collect::<Vec<_>>();
        vec![
            json_decoder(TRANSACTION_AVSC),
            json_decoder(ORDER_AVSC),
            JsonDecoder::try_new(Arc::new(Schema::new(typed))).expect("decodable columns"),
        ]
    })
}

fn json_decoder(avsc: &str) -> JsonDecoder {
    let fields = avro_to_fields(avsc, Path::new("fuzz.avsc")).expect("a valid record schema");
    JsonDecoder::try_new(Arc::new(Schema::new(fields))).expect("a decodable schema")
}

/// The input as records: split at `\n`, at most [`MAX_RECORDS`].
fn split_records(data: &[u8]) -> Vec<RawRecord> {
    data.split(|b| *b == b'\n')
        .take(MAX_RECORDS)
        .enumerate()
        .map(|(i, payload)| record(i, payload.to_vec()))
        .collect()
}

fn record(i: usize, payload: Vec<u8>) -> RawRecord {
    RawRecord {
        key: Some(format!("k{i}").into_bytes()),
        payload,
        headers: vec![
            ("source".into(), Some(b"fuzz".to_vec())),
            ("empty".into(), None),
        ],
        timestamp_ms: Some(1_795_651_200_000 + i as i64),
        position: Position {
            topic: Arc::from("fuzz"),
            partition: 0,
            offset: i as i64,
        },
    }
}

/// The decoders' contract ([`JsonDecoder::decode`]): never fails as a whole; each record is
/// one row or one failure; rows and failures in ascending record order.
fn check_decoded(decoded: &Decoded, records: usize) {
    assert_eq!(
        decoded.batch.num_rows(),
        decoded.rows.len(),
        "one row index per decoded row"
    );
    assert!(
        decoded.rows.windows(2).all(|w| w[0] < w[1]),
        "rows ascending: {:?}",
        decoded.rows
    );
    assert!(
        decoded.failures.windows(2).all(|w| w[0].index < w[1].index),
        "failures ascending: {:?}",
        decoded.failures
    );
    assert_eq!(
        decoded.rows.len() + decoded.failures.len(),
        records,
        "every record is a row or a failure (rows {:?}, failures {:?})",
        decoded.rows,
        decoded.failures
    );
    assert!(
        decoded.rows.iter().all(|r| (*r as usize) < records)
            && decoded.failures.iter().all(|f| f.index < records),
        "indexes within the batch"
    );
}

// ------------------------------------------------------------------------------------------
// Avro

/// Plain Avro datums: the whole input is one datum, decoded with the transaction schema and
/// with the nested one.
pub fn avro_plain(data: &[u8]) {
    let records = [record(0, data.to_vec())];
    for decoder in avro_plain_decoders() {
        check_decoded(&decoder.decode(&records), 1);
    }
}

fn avro_plain_decoders() -> &'static [AvroDecoder] {
    static DECODERS: OnceLock<Vec<AvroDecoder>> = OnceLock::new();
    DECODERS.get_or_init(|| {
        [TRANSACTION_AVSC, ORDER_AVSC]
            .into_iter()
            .map(|avsc| avro_decoder(avsc, AvroWire::Plain, None))
            .collect()
    })
}

/// Confluent-framed Avro (magic byte 0, big-endian schema id, datum) into the transaction
/// schema. Schema id 1 is the transaction itself, 2 an evolved transaction, 3 an unrelated
/// record; other ids are unknown.
pub fn avro_confluent(data: &[u8]) {
    let records = [record(0, data.to_vec())];
    check_decoded(&avro_confluent_decoder().decode(&records), 1);
}

fn avro_confluent_decoder() -> &'static AvroDecoder {
    static DECODER: OnceLock<AvroDecoder> = OnceLock::new();
    DECODER.get_or_init(|| {
        let url = serve_registry(vec![
            (1, TRANSACTION_AVSC),
            (2, EVOLVED_TRANSACTION_AVSC),
            (3, ORDER_AVSC),
        ]);
        let registry = SchemaRegistrySpec {
            url,
            username: None,
            password: None,
        };
        let decoder = avro_decoder(TRANSACTION_AVSC, AvroWire::Confluent, Some(&registry));
        // Fetch the writer schemas once (ids 1..=4; 4 is remembered as unknown), on a thread
        // of its own with its own HTTP client, so no connection pool outlives the runtime.
        let probes: Vec<RawRecord> = (1u32..=4)
            .map(|id| {
                let mut payload = vec![0u8];
                payload.extend_from_slice(&id.to_be_bytes());
                record(id as usize, payload)
            })
            .collect();
        std::thread::scope(|s| {
            s.spawn(|| {
                crate::inference::protocol::transport::use_own_client_on_this_thread();
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime")
                    .block_on(decoder.prepare(&probes));
            })
            .join()
            .expect("the writer schemas are fetched");
        });
        decoder
    })
}

fn avro_decoder(avsc: &str, wire: AvroWire, registry: Option<&SchemaRegistrySpec>) -> AvroDecoder {
    let reader = apache_avro::Schema::parse_str(avsc).expect("a valid Avro schema");
    AvroDecoder::new(json_decoder(avsc), reader, wire, registry)
}

/// A Schema Registry stand-in on 127.0.0.1: `GET /schemas/ids/{id}` answers the schema with
/// that id, or 404. Serves until the process ends; returns its base URL.
fn serve_registry(schemas: Vec<(u32, &'static str)>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let url = format!("http://{}", listener.local_addr().expect("bound"));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = Vec::new();
            let mut chunk = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&chunk[..n]),
                }
            }
            let request = String::from_utf8_lossy(&request);
            let id = request
                .split_whitespace()
                .nth(1)
                .and_then(|path| path.strip_prefix("/schemas/ids/"))
                .and_then(|id| id.parse::<u32>().ok());
            let (status, body) = match schemas.iter().find(|(i, _)| Some(*i) == id) {
                Some((_, schema)) => ("200 OK", serde_json::json!({ "schema": schema })),
                None => (
                    "404 Not Found",
                    serde_json::json!({ "error_code": 40403, "message": "Schema not found" }),
                ),
            };
            let body = body.to_string();
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    url
}

// ------------------------------------------------------------------------------------------
// YAML

/// A pipeline file, as if read from `pipelines/` of this checkout (relative paths such as
/// `../models/registry.yaml` resolve), with a fixed environment.
pub fn spec_pipeline(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = crate::spec::load_str(text, &checkout_file("pipelines/fuzz.yaml"), &fuzz_env);
}

/// A gateway file, as if read from `models/` of this checkout, with a fixed environment.
pub fn spec_gateway(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = crate::spec::load_gateway_str(text, &checkout_file("models/fuzz.yaml"), &fuzz_env);
}

fn checkout_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn fuzz_env(name: &str) -> Option<String> {
    match name {
        "KAFKA_BOOTSTRAP_SERVERS" => Some("localhost:9092".into()),
        "JWT_SECRET" => Some("s3cr3t".into()),
        "EMPTY" => Some(String::new()),
        "DOLLAR" => Some("${DOLLAR}".into()),
        _ => None,
    }
}

// ------------------------------------------------------------------------------------------
// OIP v2

/// An OIP v2 inference request. First byte even: the rest is a JSON body. Odd: the next 4
/// bytes are the `Inference-Header-Content-Length` (little-endian) and the rest the body, a
/// JSON header followed by binary tensor data. A decoded request's columns are then encoded
/// back as an answer (binary and JSON outputs).
pub fn oip_request(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (body, header_length) = if mode & 1 == 0 {
        (rest, None)
    } else {
        let Some((length, body)) = rest.split_first_chunk::<4>() else {
            return;
        };
        (body, Some(u32::from_le_bytes(*length) as usize))
    };
    let Ok(request) = decode_request(body, header_length) else {
        return;
    };
    let schema = request.batch.schema();
    let columns: &[ArrayRef] = request.batch.columns();
    let outputs: Vec<OutputTensor<'_>> = schema
        .fields()
        .iter()
        .zip(columns)
        .enumerate()
        .map(|(i, (field, values))| OutputTensor {
            name: field.name(),
            values,
            binary: (i % 2 == 0) != request.binary_by_default,
        })
        .collect();
    let _ = encode_response("fuzz", "1", request.id.as_deref(), &outputs);
}

// ------------------------------------------------------------------------------------------
// OpenAI

/// An OpenAI-compatible request body: parsed, its `model` read and replaced. Checks the
/// rewriting's contract: the result is the same JSON object with `model` replaced.
pub fn openai_body(data: &[u8]) {
    let Ok(body) = OpenAiBody::parse(data) else {
        return;
    };
    let backend = "back\"end\u{e9}";
    let model = body.model();
    let rewritten = body.with_model(backend);
    // The reference is a full parse; bodies it cannot hold (nesting past serde_json's depth
    // limit, numbers out of the f64 range) are still rewritten, but not compared.
    let Ok(mut reference) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let rewritten: serde_json::Value = serde_json::from_str(&rewritten)
        .unwrap_or_else(|e| panic!("with_model wrote invalid JSON ({e}): {rewritten}"));
    assert_eq!(
        model.as_deref(),
        reference["model"].as_str(),
        "model() is the body's `model` string"
    );
    reference["model"] = serde_json::Value::from(backend);
    assert_eq!(rewritten, reference, "only `model` changes");
}

// ------------------------------------------------------------------------------------------
// JWT

/// A bearer token, verified by two verifiers (HS256 + ES256 with a JWKS; ES256 + HS256 +
/// RS256 with a PEM key). First byte even: the rest is the token. Odd: the rest is
/// `header \n claims` (without `\n`: claims under an HS256 header), signed here with the
/// HS256 secret, so claim checking is reached with any claims.
pub fn jwt(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let token = if mode & 1 == 0 {
        match std::str::from_utf8(rest) {
            Ok(token) => token.to_string(),
            Err(_) => return,
        }
    } else {
        let (header, claims) = match rest.iter().position(|b| *b == b'\n') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (&br#"{"alg":"HS256","typ":"JWT"}"#[..], rest),
        };
        let signing_input = format!("{}.{}", base64url(header), base64url(claims));
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, JWT_SECRET.as_bytes());
        let signature = ring::hmac::sign(&key, signing_input.as_bytes());
        format!("{signing_input}.{}", base64url(signature.as_ref()))
    };
    for verifier in jwt_verifiers() {
        let _ = verifier.verify(&token);
    }
}

fn jwt_verifiers() -> &'static [JwtVerifier] {
    static VERIFIERS: OnceLock<Vec<JwtVerifier>> = OnceLock::new();
    VERIFIERS.get_or_init(|| {
        // The verifier reads its keys from files: write them once, atomically (several fuzzing
        // processes may start at once).
        let dir = std::env::temp_dir().join("streamgate-fuzz-jwt-keys");
        std::fs::create_dir_all(&dir).expect("a temporary folder");
        for (name, text) in [("ec.pem", EC_PUBLIC_PEM), ("jwks.json", EC_JWKS)] {
            let partial = dir.join(format!("{name}.{}", std::process::id()));
            std::fs::write(&partial, text).expect("key file written");
            std::fs::rename(&partial, dir.join(name)).expect("key file in place");
        }
        let spec = |algorithms: Vec<JwtAlgorithm>, pem: Option<&str>, jwks: Option<&str>| JwtSpec {
            algorithms,
            issuer: JWT_ISSUER.into(),
            audience: JWT_AUDIENCE.into(),
            hs256_secret: Some(Secret::new(JWT_SECRET)),
            public_key_file: pem.map(str::to_string),
            jwks_file: jwks.map(str::to_string),
            scopes_claim: "scope".into(),
            leeway_seconds: 30,
        };
        [
            spec(
                vec![JwtAlgorithm::Hs256, JwtAlgorithm::Es256],
                None,
                Some("jwks.json"),
            ),
            spec(
                vec![
                    JwtAlgorithm::Es256,
                    JwtAlgorithm::Hs256,
                    JwtAlgorithm::Rs256,
                ],
                Some("ec.pem"),
                None,
            ),
        ]
        .iter()
        .map(|s| JwtVerifier::new(s, &dir).expect("a verifier"))
        .collect()
    })
}

/// Base64url without padding (JWT segments).
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed(target: &str, name: &str) -> Vec<u8> {
        std::fs::read(checkout_file(&format!("fuzz/corpus/{target}/{name}")))
            .unwrap_or_else(|e| panic!("seed {target}/{name}: {e}"))
    }

    /// The seeds are real examples: the valid ones decode.
    #[test]
    fn the_seed_records_decode() {
        let rows = |decoded: Decoded| (decoded.rows.len(), decoded.failures.len());
        let records = split_records(&seed("json_records", "transactions"));
        assert_eq!(rows(json_decoders()[0].decode(&records)), (4, 0));
        let records = [record(0, seed("avro_plain", "transaction-1"))];
        assert_eq!(rows(avro_plain_decoders()[0].decode(&records)), (1, 0));
        let records = [record(0, seed("avro_plain", "order-nested"))];
        assert_eq!(rows(avro_plain_decoders()[1].decode(&records)), (1, 0));
        for (name, ok) in [
            ("id1-transaction", true),
            ("id2-evolved", true),
            ("id2-unknown-symbol", false),
            ("id3-incompatible", false),
            ("id9-unknown", false),
        ] {
            let decoded =
                avro_confluent_decoder().decode(&[record(0, seed("avro_confluent", name))]);
            assert_eq!(rows(decoded), if ok { (1, 0) } else { (0, 1) }, "{name}");
        }
    }

    #[test]
    fn the_seed_tokens_verify() {
        for name in ["hs256-valid", "hs256-scope-list", "es256-kid"] {
            let token = String::from_utf8(seed("jwt", name)[1..].to_vec()).unwrap();
            assert!(jwt_verifiers()[0].verify(&token).is_ok(), "{name}");
        }
        let token = String::from_utf8(seed("jwt", "es256-no-kid")[1..].to_vec()).unwrap();
        assert!(jwt_verifiers()[1].verify(&token).is_ok());
        assert_eq!(base64url(b"any carnal pleas"), "YW55IGNhcm5hbCBwbGVhcw");
        assert_eq!(base64url(b"\xff\xfe"), "__4");
    }
}

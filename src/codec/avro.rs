//! Avro decode: plain datums written with the reader schema, or the Confluent wire format
//! (magic byte `0`, 4-byte big-endian schema id, datum) whose writer schemas come from a
//! Schema Registry. Writer schemas are resolved to the pipeline's reader schema by the Avro
//! rules, then rows go through the JSON decoder's typing, so Avro and JSON records become the
//! same Arrow columns.
//!
//! Bad input is precise and per record: `avro_short_header`, `avro_bad_magic`,
//! `avro_unknown_schema`, `avro_truncated`, `avro_incompatible_schema`, `avro_too_deep`,
//! `avro_invalid`. A registry that cannot be reached is not bad input:
//! [`AvroDecoder::prepare`] waits for it.
//!
//! Every datum is first checked against its writer schema in linear time
//! ([`super::avro_scan`]): apache-avro trusts declared lengths and nests without limit, so a
//! hostile datum could otherwise make it reserve gigabytes or overflow the stack.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;

use apache_avro::Schema as AvroSchema;

use super::RecordFailure;
use super::avro_scan::{DatumShape, Refusal};
use super::json::{Decoded, JsonDecoder};
use crate::batch::{ErrorClass, RawRecord};
use crate::spec::{AvroWire, SchemaRegistrySpec, Secret};

/// Why the registry could not answer a schema lookup (the batch waits and asks again).
#[derive(Debug, thiserror::Error)]
enum FetchError {
    /// The request failed (kept without its URL).
    #[error(transparent)]
    Http(reqwest::Error),
    /// The registry answered with an error other than "not found".
    #[error("registry answered {0}")]
    Status(reqwest::StatusCode),
    /// The answer is larger than [`MAX_REGISTRY_ANSWER`].
    #[error("registry answer larger than 1 MiB")]
    TooLarge,
    /// The answer is not the expected JSON.
    #[error("malformed registry answer: {0}")]
    Malformed(#[source] serde_json::Error),
}

/// Most bytes one declared length may make apache-avro allocate (a Kafka message is at most
/// a few MiB). A second line of defence: the pre-check already refuses any length larger
/// than the datum's remaining bytes.
const MAX_DATUM_ALLOCATION: usize = 16 << 20;

/// Registry lookups in flight at once.
const REGISTRY_CONCURRENCY: usize = 8;

/// Largest registry answer read (a schema is a few KiB).
const MAX_REGISTRY_ANSWER: usize = 1 << 20;

/// Unknown ids remembered at most (garbage records can name any id); past it the memory of
/// unknown ids starts over. How long one is remembered before the registry is asked again.
const MAX_UNKNOWN_IDS: usize = 10_000;
const UNKNOWN_TTL: Duration = Duration::from_secs(300);

/// Longest wait between attempts to reach an unavailable registry.
const MAX_REGISTRY_BACKOFF: Duration = Duration::from_secs(5);

/// Decodes Avro records into the pipeline's input table.
pub struct AvroDecoder {
    json: JsonDecoder,
    reader: Arc<Writer>,
    wire: AvroWire,
    registry: Option<SchemaRegistry>,
}

impl AvroDecoder {
    /// A decoder of `wire` datums into `reader_schema` (already converted to `json`'s record
    /// schema).
    pub fn new(
        json: JsonDecoder,
        reader_schema: AvroSchema,
        wire: AvroWire,
        registry: Option<&SchemaRegistrySpec>,
    ) -> Self {
        // A datum can claim a huge array or string length in a few bytes; cap what one read
        // may allocate (the library default, 512 MiB, would abort the process on small
        // hosts). Set once per process; later calls keep the first value.
        apache_avro::util::max_allocation_bytes(MAX_DATUM_ALLOCATION);
        AvroDecoder {
            json,
            reader: Arc::new(Writer::new(reader_schema)),
            wire,
            registry: registry.map(SchemaRegistry::new),
        }
    }

    /// Fetches the writer schemas `records` need that are not cached yet, waiting (with
    /// backoff) while the registry is unreachable: a registry outage holds the batch (the
    /// source pauses) instead of dead-lettering records. Unknown ids are remembered as such.
    pub async fn prepare(&self, records: &[RawRecord]) {
        let Some(registry) = &self.registry else {
            return;
        };
        let mut missing: Vec<u32> = records
            .iter()
            .filter_map(|r| schema_id(&r.payload))
            .filter(|id| !registry.knows(*id))
            .collect();
        missing.sort_unstable();
        missing.dedup();
        // Ids come from outside: look them up a few at a time, each retried while the registry
        // is unavailable.
        futures::stream::iter(missing)
            .for_each_concurrent(REGISTRY_CONCURRENCY, |id| async move {
                let mut wait = Duration::from_millis(50);
                loop {
                    match registry.fetch(id).await {
                        Ok(()) => break,
                        Err(e) => {
                            tracing::warn!(schema_id = id, error = %e, "schema registry unavailable; holding the batch");
                            tokio::time::sleep(wait).await;
                            wait = (wait * 2).min(MAX_REGISTRY_BACKOFF);
                        }
                    }
                }
            })
            .await;
    }

    /// Decodes `records`; each bad record is reported with its class.
    pub fn decode(&self, records: &[RawRecord]) -> Decoded {
        let mut converted = Vec::with_capacity(records.len());
        let mut origin = Vec::with_capacity(records.len());
        let mut failures = Vec::new();
        for (i, record) in records.iter().enumerate() {
            match self.to_json(&record.payload) {
                Ok(json) => {
                    converted.push(RawRecord {
                        payload: json,
                        ..record.clone()
                    });
                    origin.push(i);
                }
                Err((class, message)) => failures.push(RecordFailure {
                    index: i,
                    class,
                    message,
                }),
            }
        }
        let mut decoded = self.json.decode(&converted);
        for row in decoded.rows.iter_mut() {
            *row = origin[*row as usize] as u32;
        }
        for f in decoded.failures.iter_mut() {
            f.index = origin[f.index];
        }
        decoded.failures.extend(failures);
        decoded.failures.sort_by_key(|f| f.index);
        decoded
    }

    /// One datum as JSON bytes (the JSON decoder then types it).
    fn to_json(&self, payload: &[u8]) -> Result<Vec<u8>, (ErrorClass, String)> {
        let (writer, mut datum): (Arc<Writer>, &[u8]) = match self.wire {
            AvroWire::Plain => (self.reader.clone(), payload),
            AvroWire::Confluent => {
                if payload.len() < 5 {
                    return Err((
                        ErrorClass::AvroShortHeader,
                        format!(
                            "{} bytes: shorter than the 5-byte Confluent header (magic byte and schema id)",
                            payload.len()
                        ),
                    ));
                }
                if payload[0] != 0 {
                    return Err((
                        ErrorClass::AvroBadMagic,
                        format!("magic byte is {:#04x}, expected 0x00", payload[0]),
                    ));
                }
                let id = u32::from_be_bytes([payload[1], payload[2], payload[3], payload[4]]);
                let writer = self
                    .registry
                    .as_ref()
                    .and_then(|r| r.get(id))
                    .ok_or_else(|| {
                        (
                            ErrorClass::AvroUnknownSchema,
                            format!("schema id {id} is not in the schema registry"),
                        )
                    })?;
                (writer, &payload[5..])
            }
        };
        writer.shape.check(datum).map_err(|refusal| match refusal {
            Refusal::Truncated(m) => (ErrorClass::AvroTruncated, m),
            Refusal::Invalid(m) => (ErrorClass::AvroInvalid, super::truncate_message(&m, 300)),
            Refusal::TooDeep => (
                ErrorClass::AvroTooDeep,
                format!(
                    "the datum nests records, arrays and maps deeper than {} levels",
                    super::avro_scan::MAX_DEPTH
                ),
            ),
        })?;
        let value =
            apache_avro::from_avro_datum(&writer.schema, &mut datum, None).map_err(|e| {
                let message = e.to_string();
                let class =
                    if message.contains("fill whole buffer") || message.contains("UnexpectedEof") {
                        ErrorClass::AvroTruncated
                    } else {
                        ErrorClass::AvroInvalid
                    };
                (class, super::truncate_message(&message, 300))
            })?;
        if !datum.is_empty() {
            return Err((
                ErrorClass::AvroInvalid,
                format!("{} bytes left after the datum", datum.len()),
            ));
        }
        let value = if Arc::ptr_eq(&writer, &self.reader) {
            value
        } else {
            value.resolve(&self.reader.schema).map_err(|e| {
                (
                    ErrorClass::AvroIncompatibleSchema,
                    super::truncate_message(
                        &format!("writer schema does not resolve to the pipeline's schema: {e}"),
                        300,
                    ),
                )
            })?
        };
        let json = serde_json::Value::try_from(value).map_err(|e| {
            (
                ErrorClass::AvroInvalid,
                super::truncate_message(&e.to_string(), 300),
            )
        })?;
        serde_json::to_vec(&json).map_err(|e| (ErrorClass::AvroInvalid, e.to_string()))
    }
}

/// A writer schema and its compiled shape for the pre-check.
struct Writer {
    schema: AvroSchema,
    shape: DatumShape,
}

impl Writer {
    fn new(schema: AvroSchema) -> Self {
        Writer {
            shape: DatumShape::new(&schema),
            schema,
        }
    }
}

/// The schema id of a Confluent-framed payload.
fn schema_id(payload: &[u8]) -> Option<u32> {
    (payload.len() >= 5 && payload[0] == 0)
        .then(|| u32::from_be_bytes([payload[1], payload[2], payload[3], payload[4]]))
}

/// A cached client of a Confluent-compatible Schema Registry (`GET /schemas/ids/{id}`).
struct SchemaRegistry {
    url: String,
    username: Option<String>,
    password: Option<Secret>,
    /// Schema id → parsed schema (writer schemas never change for an id).
    cache: RwLock<HashMap<u32, Arc<Writer>>>,
    /// Ids the registry did not know, and when it said so (bounded, forgotten after a TTL).
    unknown: RwLock<HashMap<u32, std::time::Instant>>,
}

impl SchemaRegistry {
    fn new(spec: &SchemaRegistrySpec) -> Self {
        SchemaRegistry {
            url: spec.url.trim_end_matches('/').to_string(),
            username: spec.username.clone(),
            password: spec.password.clone(),
            cache: RwLock::new(HashMap::new()),
            unknown: RwLock::new(HashMap::new()),
        }
    }

    fn knows(&self, id: u32) -> bool {
        if self
            .cache
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&id)
        {
            return true;
        }
        self.unknown
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .is_some_and(|at| at.elapsed() < UNKNOWN_TTL)
    }

    fn get(&self, id: u32) -> Option<Arc<Writer>> {
        self.cache
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
    }

    fn remember_unknown(&self, id: u32) {
        let mut unknown = self.unknown.write().unwrap_or_else(|e| e.into_inner());
        if unknown.len() >= MAX_UNKNOWN_IDS {
            unknown.clear();
        }
        unknown.insert(id, std::time::Instant::now());
    }

    /// Fetches schema `id` into the cache. `Err` only when the registry could not answer
    /// (the caller retries); an unknown id or an unparseable schema is cached as unknown.
    async fn fetch(&self, id: u32) -> Result<(), FetchError> {
        let client = crate::http_client::client();
        let mut request = client
            .get(format!("{}/schemas/ids/{id}", self.url))
            .timeout(Duration::from_secs(10));
        if let (Some(user), Some(password)) = (&self.username, &self.password) {
            request = request.basic_auth(user, Some(password.expose()));
        }
        let response = request
            .send()
            .await
            .map_err(|e| FetchError::Http(e.without_url()))?;
        let status = response.status();
        // Only "not found" means the id is unknown; anything else (5xx, 429, 401/403 from a
        // misconfigured credential or proxy) is retried, so records are never dead-lettered
        // because the registry could not be asked.
        if !status.is_success() && status.as_u16() != 404 {
            return Err(FetchError::Status(status));
        }
        if !status.is_success() {
            self.remember_unknown(id);
            return Ok(());
        }
        let mut response = response;
        let mut bytes = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| FetchError::Http(e.without_url()))?
        {
            if bytes.len() + chunk.len() > MAX_REGISTRY_ANSWER {
                return Err(FetchError::TooLarge);
            }
            bytes.extend_from_slice(&chunk);
        }
        #[derive(serde::Deserialize)]
        struct Body {
            schema: String,
        }
        let body: Body = serde_json::from_slice(&bytes).map_err(FetchError::Malformed)?;
        match AvroSchema::parse_str(&body.schema) {
            Ok(schema) => {
                self.cache
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(id, Arc::new(Writer::new(schema)));
            }
            Err(e) => {
                tracing::error!(schema_id = id, error = %e, "registry schema is not valid Avro");
                self.remember_unknown(id);
            }
        }
        Ok(())
    }
}

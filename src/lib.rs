//! # Streamgate
//!
//! An event-streaming AI gateway: declarative YAML pipelines consume Kafka or NATS, decode
//! records to Arrow, preprocess with DataFusion SQL, call models, route rows to sinks and
//! never lose a record; the same pipeline backfills over Parquet; and one HTTP surface serves
//! models (and the admin routes) behind keys, limits and metrics.
//!
//! ## The path of a record
//!
//! ```text
//!  source ──► decode ──► SQL ──► inference ──► route (where) ──► sinks ──► acks ──► commit
//!  (Kafka,    (codec)   (transform) (inference)  (runtime/rows)  (sink)    (ack)   (source)
//!   NATS)         └────────┴─────────┴──────────────┴──────────► dead-letter sink
//! ```
//!
//! ## Modules, lowest layer first
//!
//! Arrows point down only; `tests/integration/architecture.rs` checks every `crate::` import
//! against this order and a list of arrows that must never exist (with their reasons).
//!
//! | level | modules | own |
//! |---|---|---|
//! | 0 | [`ack`], [`telemetry`], [`http_client`], [`testing`] | receipts and ordered offset tracking; logging, metric families and typed stats; the outbound HTTP client with its guarded resolver; test and demo fixtures (mock model server, embedded broker, transaction generator), never on the data path |
//! | 1 | [`batch`], [`spec`] | the unit of work and the failure vocabulary (`Stage`, `Failure`); the YAML files: types, interpolation, loading, validation, JSON Schema, pure parsers. Each component kind's configuration (`source/<kind>/spec.rs`, `sink/<kind>/spec.rs`) belongs to this layer |
//! | 2 | [`codec`] | bytes ↔ Arrow: JSON and Avro decode and encode, record schemas, metadata columns |
//! | 3 | [`connect`] | client connections shared by each system's source and sink (Kafka, NATS) |
//! | 4 | [`source`], [`transform`], [`inference`], [`sink`] | the components: Kafka and NATS sources; the SQL stage and output filters; models, protocols, batching, balancing, retries; Kafka, NATS, file and stdout sinks and dead letters |
//! | 5 | [`plan`] | a spec compiled: schemas, decoder, SQL plan, filters, inference steps |
//! | 6 | [`runtime`] | runs a pipeline: workers, the SQL → inference → route step shared with backfill, ordered shutdown, states |
//! | 7 | [`demo`] | the one-command demo: the fraud pipeline on the embedded broker, with a summary |
//! | 8 | [`gateway`], [`backfill`] | the HTTP surface (`serve`, and the admin port of `run`); the pipeline over Parquet files |
//! | 9 | [`cli`] | the command line's types |
//! | 10 | `fuzzing` | entry points for the fuzz targets (not an API) |
//!
//! The binary (`main.rs`, `commands.rs`, `alloc.rs`) sits on top.

pub mod ack;
pub mod backfill;
pub mod batch;
pub mod cli;
pub mod codec;
pub mod connect;
pub mod demo;
/// Entry points for the fuzz targets in `fuzz/`; not an API.
#[doc(hidden)]
pub mod fuzzing;
pub mod gateway;
pub mod http_client;
pub mod inference;
pub mod plan;
pub mod runtime;
pub mod sink;
pub mod source;
pub mod spec;
pub mod telemetry;
pub mod testing;
pub mod tls;
pub mod transform;

#[cfg(test)]
mod tests {
    /// Unit tests read fixtures from the checkout they were compiled in; a binary reused by
    /// another clone through a shared build cache would read that clone's files (see
    /// `tests/run.sh`, which keeps one cache per clone).
    #[test]
    fn the_test_binary_was_built_from_this_checkout() {
        let running =
            std::env::var("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR");
        assert_eq!(
            env!("CARGO_MANIFEST_DIR"),
            running,
            "this test binary was built in another checkout; give each clone its own CARGO_TARGET_DIR"
        );
    }
}

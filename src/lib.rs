//! # Streamgate
//!
//! An event-streaming AI gateway: declarative YAML pipelines consume Kafka, preprocess with
//! DataFusion SQL over Arrow micro-batches, route rows to sinks, and never lose a record.
//!
//! ## Architecture map
//!
//! ```text
//!  source ──► decode ──► SQL ──► inference ──► route (where) ──► sinks ──► acks ──► commit
//!                 └────────┴─────────┴──────────────┴──────────► dead-letter sink
//! ```
//!
//! - [`spec`]: the YAML format: serde types, interpolation, validation, JSON Schema.
//! - [`plan`]: compiles a validated spec into schemas, SQL plan and routes (what `validate`
//!   checks and `run` builds from).
//! - [`batch`] / [`ack`]: the unit of work and its receipt; ordered offset tracking.
//! - [`codec`]: bytes ↔ Arrow (JSON; record schemas from columns, Avro or JSON Schema).
//! - [`transform`]: the SQL stage (planned once, executed per batch) and output filters.
//! - [`inference`]: model registry, protocol clients, micro-batching, balancing, retries,
//!   and the pipeline stage that joins model outputs back to rows.
//! - [`source`]: Kafka consumer with per-partition batching, backpressure and ack tracking.
//! - [`sink`]: Kafka, stdout, file, and dead-letter writing.
//! - [`backfill`]: the same pipeline over Parquet files: resumable, with progress, writing
//!   Parquet datasets or to the pipeline's sinks.
//! - [`runtime`]: wires a pipeline together, runs its workers, shuts down in order.
//! - [`gateway`]: the inference gateway, and the admin port of `run`: one route table.
//! - [`telemetry`]: logging setup and metric families.
//! - [`demo`]: the embedded broker, synthetic transactions and the one-command demo.
//! - [`mock_model`]: a programmable mock model server (OIP v2, OpenAI, TF Serving, custom
//!   JSON) with fault knobs, for tests, benchmarks and trying pipelines out.
//! - [`cli`]: the command line.

pub mod ack;
pub mod backfill;
pub mod batch;
pub mod cli;
pub mod codec;
pub mod demo;
/// Entry points for the fuzz targets in `fuzz/`; not an API.
#[doc(hidden)]
pub mod fuzzing;
pub mod gateway;
pub mod http_client;
pub mod inference;
pub mod kafka;
pub mod mock_model;
pub mod nats;
pub mod plan;
pub mod runtime;
pub mod sink;
pub mod source;
pub mod spec;
pub mod telemetry;
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

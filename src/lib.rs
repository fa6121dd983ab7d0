//! # Streamgate
//!
//! An event-streaming AI gateway: declarative YAML pipelines consume Kafka, preprocess with
//! DataFusion SQL over Arrow micro-batches, route rows to sinks, and never lose a record.
//!
//! ## Architecture map
//!
//! ```text
//!  source ──► decode ──► SQL ──► route (where) ──► sinks ──► acks ──► source commits
//!                 └────────┴─────────┴──────────► dead-letter sink
//! ```
//!
//! - [`spec`]: the YAML format: serde types, interpolation, validation, JSON Schema.
//! - [`plan`]: compiles a validated spec into schemas, SQL plan and routes (what `validate`
//!   checks and `run` builds from).
//! - [`batch`] / [`ack`]: the unit of work and its receipt; ordered offset tracking.
//! - [`codec`]: bytes ↔ Arrow (JSON; record schemas from columns, Avro or JSON Schema).
//! - [`transform`]: the SQL stage (planned once, executed per batch) and output filters.
//! - [`source`]: Kafka consumer with per-partition batching, backpressure and ack tracking.
//! - [`sink`]: Kafka, stdout, file, and dead-letter writing.
//! - [`runtime`]: wires a pipeline together, runs its workers, shuts down in order.
//! - [`api`]: admin HTTP server: `/metrics`, `/healthz`, `/readyz`.
//! - [`telemetry`]: logging setup and metric families.
//! - [`demo`]: the embedded broker, synthetic transactions and the one-command demo.
//! - [`cli`]: the command line.

pub mod ack;
pub mod api;
pub mod batch;
pub mod cli;
pub mod codec;
pub mod demo;
pub mod kafka;
pub mod plan;
pub mod runtime;
pub mod sink;
pub mod source;
pub mod spec;
pub mod telemetry;
pub mod transform;

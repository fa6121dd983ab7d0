//! Test and demo fixtures, kept apart from the product's data path. Nothing here runs in a
//! production pipeline; each piece is also a command, so users can try Streamgate and write
//! their own tests against the same parts:
//!
//! - [`mock_model`]: a programmable model server with faults (`streamgate mock-model`);
//! - [`EmbeddedBroker`]: librdkafka's in-process mock Kafka cluster (`streamgate broker`,
//!   `streamgate demo`);
//! - [`generator`]: card transactions with a share of malformed records (`streamgate demo`,
//!   the tests and benchmarks).
//!
//! It imports nothing of the crate, so any test or layer may use it.

pub(crate) mod broker;
pub mod generator;
pub mod mock_model;

pub use broker::EmbeddedBroker;

//! Client connections shared by each system's source and sink: the librdkafka client
//! configuration (servers, security, properties) and the NATS connection (servers,
//! credentials, TLS). The source and sink of a kind configure their clients here, so a sink
//! can reuse its source's connection settings without either importing the other.

pub mod kafka;
pub mod nats;
pub mod transaction;

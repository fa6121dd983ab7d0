//! Integration tests, one binary (each tests/*.rs file would link the whole library again).

mod admin_cli;
mod avro;
mod backfill;
mod backpressure;
mod common;
mod crash;
mod examples;
mod gateway;
mod gateway_overload;
mod gateway_pipelines;
mod gateway_translate;
mod inference;
mod inference_e2e;
mod kafka_e2e;
mod kafka_security;
mod mlserver;
mod nats;
mod nats_server;
mod onnx_model;
mod policies;
mod process;
mod rebalance;
mod spec_golden;
mod sql_golden;

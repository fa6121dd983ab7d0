//! Integration tests, one binary (each tests/*.rs file would link the whole library again).

mod common;
mod kafka_e2e;
mod sql_golden;
mod backpressure;
mod crash;
mod process;
mod examples;

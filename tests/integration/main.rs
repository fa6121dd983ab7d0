//! Integration tests, one binary (each tests/*.rs file would link the whole library again).

mod backpressure;
mod common;
mod crash;
mod examples;
mod kafka_e2e;
mod process;
mod spec_golden;
mod sql_golden;

//! Integration tests, one binary (each tests/*.rs file would link the whole library again).

mod admin_cli;
mod backpressure;
mod common;
mod crash;
mod examples;
mod kafka_e2e;
mod policies;
mod process;
mod rebalance;
mod spec_golden;
mod sql_golden;

//! Integration tests, one binary (each tests/*.rs file would link the whole library again).

mod admin_cli;
mod architecture;
mod avro;
mod backfill;
mod backpressure;
mod common;
mod crash;
mod docs;
mod exactly_once;
mod examples;
mod fuzz_regressions;
mod gateway;
mod gateway_overload;
mod gateway_pipelines;
mod gateway_translate;
mod hardening_dead_letter;
mod hardening_limits;
mod hardening_secrets;
mod hardening_ssrf;
mod hostile;
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
mod real_kafka_broker_faults;
mod real_kafka_delivery;
mod real_kafka_exactly_once;
mod real_kafka_security;
mod rebalance;
mod spec_golden;
mod sql_golden;
mod tls_upstream;

/// Tests read fixtures from the checkout they were compiled in (`env!("CARGO_MANIFEST_DIR")`),
/// and cargo does not rebuild when the same sources move to another path: a build cache shared
/// by two clones would run these tests against the other clone's files. `tests/run.sh` keeps
/// one cache per clone; this fails loudly if a stale binary from elsewhere is ever run.
#[test]
fn the_test_binary_was_built_from_this_checkout() {
    let running = std::env::var("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR");
    assert_eq!(
        env!("CARGO_MANIFEST_DIR"),
        running,
        "this test binary was built in another checkout; give each clone its own CARGO_TARGET_DIR"
    );
}

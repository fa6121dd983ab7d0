//! The at-least-once scenarios of `crash` and `rebalance`, rerun on Apache Kafka's own broker
//! (one KRaft node, see `common::real_kafka`): `kill -9` of the gateway at random moments loses
//! nothing, SIGTERM mid-stream duplicates nothing, and on a rebalance the commit made in the
//! revoke callback succeeds, so partitions moving twice under load duplicate nothing either.
//! (librdkafka's mock coordinator rejects that commit, which is why `rebalance` only counts
//! duplicates on the embedded broker.)

use crate::common::real_kafka::RealKafka;
use crate::rebalance::Commits;

/// One broker with the scenario's topics (started on a blocking thread: it waits for Java).
fn broker_with(topics: Vec<(String, i32)>) -> RealKafka {
    let kafka = RealKafka::single();
    kafka.create_topics(&topics);
    kafka
}

#[test]
fn kill_9_at_random_moments_loses_nothing() {
    let name = "rk-crash";
    let kafka = broker_with(crate::crash::topics(name));
    crate::crash::kill_9_at_random_moments(kafka.bootstrap(), name);
}

#[test]
fn graceful_sigterm_mid_stream_has_no_duplicates() {
    let name = "rk-graceful";
    let kafka = broker_with(crate::crash::topics(name));
    crate::crash::graceful_sigterm_mid_stream(kafka.bootstrap(), name);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_commits_in_the_revoke_callback_and_duplicates_nothing() {
    let kafka = tokio::task::spawn_blocking(|| broker_with(crate::rebalance::topics()))
        .await
        .unwrap();
    // Only the commits made on revocation and on stop move the group's offsets, so a rejected
    // one would show as the next owner reprocessing what the previous one delivered.
    let duplicated =
        crate::rebalance::join_and_leave(kafka.bootstrap(), Commits::AtRebalanceAndStop).await;
    assert_eq!(
        duplicated, 0,
        "real Kafka accepts the commit made while a partition is revoked: the next owner must \
         not reprocess anything"
    );
}

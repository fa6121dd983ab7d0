//! Metric families. Labels are bounded: pipeline and output names come from configuration,
//! stages and error classes are fixed lists, partitions are bounded by the topics consumed.

use prometheus::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

use super::labels::{OUTPUT, PIPELINE};

/// Every metric family Streamgate exports, registered in one registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Records read from sources.
    pub records_in: IntCounterVec,
    /// Rows delivered per output.
    pub records_out: IntCounterVec,
    /// Rows that matched no output, or were filtered by the SQL `WHERE`.
    pub records_filtered: IntCounterVec,
    /// Records written to the dead-letter sink, by stage and error class.
    pub records_dead_lettered: IntCounterVec,
    /// Records skipped by `on_error: drop`, by stage and error class.
    pub records_dropped: IntCounterVec,
    /// Dead letters the dead-letter sink refused for good (`on_undeliverable_dead_letter`).
    pub dead_letters_undeliverable: IntCounterVec,
    /// Processing time of a batch per stage.
    pub batch_duration: HistogramVec,
    /// Time from receiving a batch's first record to its final acknowledgement.
    pub end_to_end_latency: HistogramVec,
    /// Records a consumer is behind the partition's high watermark.
    pub consumer_lag: IntGaugeVec,
    /// Batches handed to the pipeline and not yet acknowledged.
    pub pending_batches: IntGaugeVec,
    /// Batches whose acknowledgement failed (pipeline stops without committing them).
    pub batches_failed: IntCounterVec,
    /// Times the source paused consumption because the pipeline was full.
    pub backpressure_pauses: IntCounterVec,
    /// Partitions currently assigned to the pipeline's consumer.
    pub assigned_partitions: IntGaugeVec,
    /// 1 while the pipeline holds a batch because most records fail (`on_systematic_failure`).
    pub systematic_failure: IntGaugeVec,
    /// JetStream messages settled, by kind (`ack`, `term`, `nak`, `progress`, `exhausted`).
    pub nats_acks: IntCounterVec,
    /// Errors the Kafka source's consumer reported (a broker down, a request timed out), by
    /// librdkafka's error code.
    pub kafka_consumer_errors: IntCounterVec,
    /// Broker request timeouts and disconnects the Kafka source's consumer saw.
    pub kafka_broker_faults: IntCounterVec,
    /// Time to commit one exactly-once transaction (offsets, flush, end).
    pub transaction_commit: HistogramVec,
    /// Model call families.
    pub models: super::model_metrics::ModelMetrics,
    /// Gateway request families.
    pub gateway: super::gateway_metrics::GatewayMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Latency buckets from 100µs to 30s: covers in-process stages and slow model calls.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

impl Metrics {
    /// Creates and registers all families in a fresh registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let histogram = |name: &str, help: &str, labels: &[&str]| {
            let h = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
                labels,
            )
            .expect("valid metric");
            registry
                .register(Box::new(h.clone()))
                .expect("unique metric");
            h
        };
        let models = super::model_metrics::ModelMetrics::register(&registry);
        let gateway = super::gateway_metrics::GatewayMetrics::register(&registry);
        Metrics {
            models,
            gateway,
            records_in: counter(
                "streamgate_records_in_total",
                "Records read from the source.",
                &[PIPELINE],
            ),
            records_out: counter(
                "streamgate_records_out_total",
                "Rows delivered to an output.",
                &[PIPELINE, OUTPUT],
            ),
            records_filtered: counter(
                "streamgate_records_filtered_total",
                "Rows filtered by the SQL or matching no output.",
                &[PIPELINE],
            ),
            records_dead_lettered: counter(
                "streamgate_records_dead_lettered_total",
                "Records written to the dead-letter sink.",
                &[PIPELINE, "stage", "class"],
            ),
            records_dropped: counter(
                "streamgate_records_dropped_total",
                "Failed records skipped because on_error is drop.",
                &[PIPELINE, "stage", "class"],
            ),
            dead_letters_undeliverable: counter(
                "streamgate_dead_letters_undeliverable_total",
                "Dead letters the dead-letter sink refused for good, even in bounded form.",
                &[PIPELINE, "stage", "class"],
            ),
            batch_duration: histogram(
                "streamgate_batch_duration_seconds",
                "Processing time of one micro-batch in a stage.",
                &[PIPELINE, "stage"],
            ),
            end_to_end_latency: histogram(
                "streamgate_end_to_end_latency_seconds",
                "From receiving a batch's first record to the batch's final acknowledgement.",
                &[PIPELINE],
            ),
            consumer_lag: gauge(
                "streamgate_consumer_lag",
                "Records between the consumer position and the high watermark.",
                &[PIPELINE, "topic", "partition"],
            ),
            pending_batches: gauge(
                "streamgate_pending_batches",
                "Batches handed to the pipeline and not yet acknowledged.",
                &[PIPELINE],
            ),
            batches_failed: counter(
                "streamgate_batches_failed_total",
                "Batches whose acknowledgement failed; their positions are not committed.",
                &[PIPELINE],
            ),
            backpressure_pauses: counter(
                "streamgate_backpressure_pauses_total",
                "Times consumption paused because the pipeline queue was full.",
                &[PIPELINE],
            ),
            assigned_partitions: gauge(
                "streamgate_assigned_partitions",
                "Partitions currently assigned to this instance's consumer.",
                &[PIPELINE],
            ),
            systematic_failure: gauge(
                "streamgate_systematic_failure",
                "1 while the pipeline holds a batch and pauses because most records fail (on_systematic_failure); nothing is dead-lettered meanwhile.",
                &[PIPELINE],
            ),
            nats_acks: counter(
                "streamgate_nats_acks_total",
                "JetStream messages settled, by kind: ack, term (dead-lettered), nak (redeliver), progress (still working), exhausted (failed on its last allowed delivery).",
                &[PIPELINE, "kind"],
            ),
            kafka_consumer_errors: counter(
                "streamgate_kafka_consumer_errors_total",
                "Errors the Kafka source's consumer reported, by librdkafka error code (BrokerTransportFailure: a broker connection broke; AllBrokersDown; RequestTimedOut). librdkafka retries them; a rising rate is a broker or network episode.",
                &[PIPELINE, "error"],
            ),
            kafka_broker_faults: counter(
                "streamgate_kafka_broker_faults_total",
                "Requests to a broker that timed out and broker connections that broke, as the Kafka source's consumer saw them (from librdkafka statistics, every 5 s), by kind: request_timeout, disconnect.",
                &[PIPELINE, "kind"],
            ),
            transaction_commit: histogram(
                "streamgate_kafka_transaction_commit_seconds",
                "Time to commit one exactly-once transaction: wait for a batch boundary, send the offsets, flush the producer and end the transaction. Sends wait meanwhile.",
                &[PIPELINE],
            ),
            registry,
        }
    }

    /// The registry (to add families of other subsystems).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Prometheus text exposition of every family.
    pub fn render(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_else(|e| format!("# encoding failed: {e}\n"))
    }

    /// Handles with the pipeline label resolved once, for per-batch updates.
    pub fn pipeline(&self, pipeline: &str) -> PipelineMetrics {
        PipelineMetrics {
            name: pipeline.to_string(),
            records_in: self.records_in.with_label_values(&[pipeline]),
            records_filtered: self.records_filtered.with_label_values(&[pipeline]),
            end_to_end_latency: self.end_to_end_latency.with_label_values(&[pipeline]),
            pending_batches: self.pending_batches.with_label_values(&[pipeline]),
            batches_failed: self.batches_failed.with_label_values(&[pipeline]),
            backpressure_pauses: self.backpressure_pauses.with_label_values(&[pipeline]),
            assigned_partitions: self.assigned_partitions.with_label_values(&[pipeline]),
            systematic_failure: self.systematic_failure.with_label_values(&[pipeline]),
            transaction_commit: self.transaction_commit.with_label_values(&[pipeline]),
            all: self.clone(),
        }
    }
}

/// Metric handles of one pipeline.
#[derive(Clone)]
pub struct PipelineMetrics {
    name: String,
    /// `streamgate_records_in_total{pipeline}`.
    pub records_in: prometheus::IntCounter,
    /// `streamgate_records_filtered_total{pipeline}`.
    pub records_filtered: prometheus::IntCounter,
    /// `streamgate_end_to_end_latency_seconds{pipeline}`.
    pub end_to_end_latency: prometheus::Histogram,
    /// `streamgate_pending_batches{pipeline}`.
    pub pending_batches: prometheus::IntGauge,
    /// `streamgate_batches_failed_total{pipeline}`.
    pub batches_failed: prometheus::IntCounter,
    /// `streamgate_backpressure_pauses_total{pipeline}`.
    pub backpressure_pauses: prometheus::IntCounter,
    /// `streamgate_assigned_partitions{pipeline}`.
    pub assigned_partitions: prometheus::IntGauge,
    /// `streamgate_systematic_failure{pipeline}`.
    pub systematic_failure: prometheus::IntGauge,
    /// `streamgate_kafka_transaction_commit_seconds{pipeline}`.
    pub transaction_commit: prometheus::Histogram,
    all: Metrics,
}

impl PipelineMetrics {
    /// The pipeline name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `streamgate_records_out_total{pipeline, output}`.
    pub fn records_out(&self, output: &str) -> prometheus::IntCounter {
        self.all
            .records_out
            .with_label_values(&[&self.name, output])
    }

    /// `streamgate_batch_duration_seconds{pipeline, stage}`.
    pub fn batch_duration(&self, stage: &str) -> prometheus::Histogram {
        self.all
            .batch_duration
            .with_label_values(&[&self.name, stage])
    }

    /// Counts a failed record by its fate.
    pub fn record_failure(&self, dead_lettered: bool, stage: &str, class: &str) {
        let family = if dead_lettered {
            &self.all.records_dead_lettered
        } else {
            &self.all.records_dropped
        };
        family.with_label_values(&[&self.name, stage, class]).inc();
    }

    /// Counts a dead letter the dead-letter sink refused for good.
    pub fn dead_letter_undeliverable(&self, stage: &str, class: &str) {
        self.all
            .dead_letters_undeliverable
            .with_label_values(&[&self.name, stage, class])
            .inc();
    }

    /// `streamgate_nats_acks_total{pipeline, kind}`.
    pub fn nats_ack(&self, kind: &str) -> prometheus::IntCounter {
        self.all.nats_acks.with_label_values(&[&self.name, kind])
    }

    /// Counts an error of the Kafka source's consumer
    /// (`streamgate_kafka_consumer_errors_total{pipeline, error}`); `error` is librdkafka's
    /// error code name, a fixed list.
    pub fn kafka_consumer_error(&self, error: &str) {
        self.all
            .kafka_consumer_errors
            .with_label_values(&[&self.name, error])
            .inc();
    }

    /// `streamgate_kafka_broker_faults_total{pipeline, kind}` (`request_timeout`,
    /// `disconnect`).
    pub fn kafka_broker_faults(&self, kind: &str) -> prometheus::IntCounter {
        self.all
            .kafka_broker_faults
            .with_label_values(&[&self.name, kind])
    }

    /// `streamgate_consumer_lag{pipeline, topic, partition}`.
    pub fn set_consumer_lag(&self, topic: &str, partition: i32, lag: i64) {
        self.all
            .consumer_lag
            .with_label_values(&[&self.name, topic, &partition.to_string()])
            .set(lag);
    }
}

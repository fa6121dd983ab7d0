#!/usr/bin/env python3
"""Streamgate's fraud-scoring pipeline written with Quix Streams 3.x (comparison side of a benchmark).

transactions (JSON) -> validate (malformed -> transactions-dlq, raw bytes unchanged)
  -> amount > 0 -> 6 features -> model (Open Inference Protocol v2 over HTTP, <= 1000 rows/request)
  -> transactions-scored (all, keyed by card_id) and fraud-alerts (fraud_score > threshold)

Exits by itself after --expect input records (malformed included) and prints one JSON line:
{"processed":..,"scored":..,"alerts":..,"malformed":..,"seconds":..}

Batching: a stateless micro-batching step (`StreamingDataFrame.apply(..., expand=True)`) keeps
rows in memory and calls the model once per batch of up to --batch-rows rows (default 1000),
or earlier when the oldest buffered row is --batch-max-ms old (checked as records arrive), or
when the last expected record arrives; the batch's scored rows are then emitted downstream
and produced with ordinary `to_topic` calls. See README.md for why not a count window.
"""

import argparse
import math
import sys
import time

import orjson
import requests
from quixstreams import Application  # authlib, a dependency, prints a deprecation warning on stderr

REQUIRED = {
    "transaction_id": str,
    "card_id": str,
    "merchant_id": str,
    "merchant_category": str,
    "amount": (int, float),
    "currency": str,
    "country": str,
    "channel": str,
    "card_present": bool,
    "event_time": str,
}
# What both outputs publish, as Streamgate does: the columns pipelines/fraud-scoring.yaml's SQL
# selects (the benchmark's Streamgate outputs leave out its feature columns) plus fraud_score.
OUTPUT_FIELDS = ("transaction_id", "card_id", "merchant_id", "amount", "country", "channel",
                 "event_time")
RISKY_CATEGORIES = frozenset(("jewelry", "electronics", "gaming"))
RISKY_COUNTRIES = frozenset(("NG", "BR"))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers HOST:PORT")
    p.add_argument("--group", default="quix-fraud-scoring", help="consumer group id")
    p.add_argument("--model-url", required=True, help="OIP v2 base URL, e.g. http://127.0.0.1:8080")
    p.add_argument("--model-name", default="fraud")
    p.add_argument("--threshold", type=float, default=0.5, help="alert when fraud_score > this")
    p.add_argument("--expect", type=int, required=True, help="exit after this many input records")
    p.add_argument("--batch-rows", type=int, default=1000, help="max rows per model request")
    p.add_argument("--batch-max-ms", type=float, default=20.0,
                   help="flush a partial batch once its oldest row is this old (checked on arrival)")
    p.add_argument("--input-topic", default="transactions")
    p.add_argument("--scored-topic", default="transactions-scored")
    p.add_argument("--alerts-topic", default="fraud-alerts")
    p.add_argument("--dlq-topic", default="transactions-dlq")
    p.add_argument("--fetch-wait-max-ms", type=int, default=10,
                   help="consumer fetch.wait.max.ms (the embedded broker holds fetches this long)")
    p.add_argument("--linger-ms", type=int, default=5,
                   help="producer linger.ms (5, librdkafka's and Streamgate's sink default)")
    p.add_argument("--log-level", default="WARNING", help="quixstreams log level")
    p.add_argument("--describe-configs", action="store_true",
                   help="let Quix read topic configs with DescribeConfigs (real clusters); by "
                        "default topics are taken from metadata, as the embedded broker has no "
                        "DescribeConfigs")
    return p.parse_args(argv)


def topics_from_metadata_only():
    """The embedded broker (librdkafka's mock cluster) does not answer DescribeConfigs, which
    Quix uses when it registers a topic; read partitions and replicas from metadata instead."""
    from quixstreams.models.topics.admin import TopicAdmin
    from quixstreams.models.topics.topic import TopicConfig

    def inspect_topics(self, topic_names, timeout=30):
        cluster = self.list_topics(timeout=timeout)
        return {
            name: TopicConfig(num_partitions=len(cluster[name].partitions),
                              replication_factor=len(cluster[name].partitions[0].replicas),
                              extra_config={})
            if name in cluster else None
            for name in topic_names
        }

    TopicAdmin.inspect_topics = inspect_topics


def valid(tx):
    if not isinstance(tx, dict):
        return False
    for field, kind in REQUIRED.items():
        v = tx.get(field)
        if not isinstance(v, kind) or (kind is not bool and isinstance(v, bool)):
            return False
    d = tx.get("distance_from_home_km")
    return d is None or (isinstance(d, (int, float)) and not isinstance(d, bool))


def features(tx):
    d = tx.get("distance_from_home_km") or 0.0
    return (
        math.log1p(tx["amount"]),
        math.log1p(d) if d > -1.0 else 0.0,
        1.0 if tx["card_present"] else 0.0,
        1.0 if tx["channel"] == "online" else 0.0,
        1.0 if tx["merchant_category"] in RISKY_CATEGORIES else 0.0,
        1.0 if tx["country"] in RISKY_COUNTRIES else 0.0,
    )


class OipModel:
    """Open Inference Protocol v2 client on one keep-alive HTTP session."""

    def __init__(self, base_url, name):
        self.url = f"{base_url.rstrip('/')}/v2/models/{name}/infer"
        self.session = requests.Session()
        self.headers = {"content-type": "application/json"}
        self.requests = 0
        self.seconds = 0.0

    def score(self, rows):
        data = [x for row in rows for x in row]
        body = orjson.dumps({"inputs": [{"name": "features", "datatype": "FP32",
                                         "shape": [len(rows), 6], "data": data}]})
        t = time.monotonic()
        r = self.session.post(self.url, data=body, headers=self.headers, timeout=30)
        r.raise_for_status()
        out = orjson.loads(r.content)["outputs"][0]
        scores = out["data"]
        if len(scores) != len(rows):
            raise RuntimeError(f"model returned {len(scores)} scores for {len(rows)} rows")
        self.requests += 1
        self.seconds += time.monotonic() - t
        return scores


def main(argv=None):
    args = parse_args(argv)
    started = time.monotonic()
    stats = {"processed": 0, "scored": 0, "alerts": 0, "malformed": 0}
    model = OipModel(args.model_url, args.model_name)
    if not args.describe_configs:
        topics_from_metadata_only()

    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        consumer_extra_config={"fetch.wait.max.ms": args.fetch_wait_max_ms},
        producer_extra_config={"linger.ms": args.linger_ms},
        loglevel=args.log_level,
    )
    tx_topic = app.topic(args.input_topic, key_deserializer="bytes", value_deserializer="bytes")
    dlq_topic = app.topic(args.dlq_topic, key_serializer="bytes", value_serializer="bytes")
    scored_topic = app.topic(args.scored_topic, key_serializer="str", value_serializer="json")
    alerts_topic = app.topic(args.alerts_topic, key_serializer="str", value_serializer="json")

    # 1. Parse and validate; malformed records keep their raw bytes for the dead-letter topic.
    first = []

    def parse(raw):
        if not first:
            first.append(time.monotonic())
        stats["processed"] += 1
        try:
            tx = orjson.loads(raw)
        except orjson.JSONDecodeError:
            tx = None
        if tx is None or not valid(tx):
            stats["malformed"] += 1
            return {"_malformed": raw}
        return tx

    # 3. Micro-batching step: buffer valid rows, score up to batch_rows per request.
    pending, pending_rows = [], []
    oldest = [0.0]
    threshold = args.threshold

    def flush():
        scores = model.score(pending_rows)
        out = []
        for tx, s in zip(pending, scores):
            row = {k: tx[k] for k in OUTPUT_FIELDS}
            row["fraud_score"] = s
            if s > threshold:
                stats["alerts"] += 1
            out.append(row)
        stats["scored"] += len(out)
        pending.clear()
        pending_rows.clear()
        return out

    def batch(tx):
        out = []
        if "_malformed" not in tx and tx["amount"] > 0:  # 2. keep amount > 0
            if not pending:
                oldest[0] = time.monotonic()
            pending.append(tx)
            pending_rows.append(features(tx))
        last = stats["processed"] >= args.expect
        if pending and (len(pending) >= args.batch_rows or last
                        or (time.monotonic() - oldest[0]) * 1000.0 >= args.batch_max_ms):
            out = flush()
        if last:
            app.stop()  # finishes this record, commits the checkpoint, flushes the producer
        return out

    sdf = app.dataframe(topic=tx_topic)
    sdf = sdf.apply(parse)
    # Dead-letter branch: the original bytes, unchanged, with the original key.
    sdf.filter(lambda v: "_malformed" in v).apply(lambda v: v["_malformed"]).to_topic(dlq_topic)
    # Scoring branch (sees every record so it can flush the tail on the last one).
    scored = sdf.apply(batch, expand=True)
    # 4. Every scored transaction, then the alerts subset.
    scored = scored.to_topic(scored_topic, key=lambda v: v["card_id"])
    scored = scored.filter(lambda v: v["fraud_score"] > threshold)
    scored.to_topic(alerts_topic, key=lambda v: v["card_id"])

    app.run()

    summary = dict(stats, seconds=round(time.monotonic() - started, 3),
                   first_record_seconds=round(first[0] - started, 3) if first else None,
                   model_requests=model.requests, model_seconds=round(model.seconds, 3))
    sys.stdout.write(orjson.dumps(summary).decode() + "\n")
    sys.stdout.flush()
    return 0 if stats["processed"] >= args.expect else 1


if __name__ == "__main__":
    sys.exit(main())

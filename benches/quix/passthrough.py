"""Quix Streams' own floor on this broker: consume bytes and produce them unchanged.

No JSON, no model, one output: what any Quix Streams pipeline pays per record before doing
work. Prints the CPU per record of the processing (imports excluded, group join included).

    python benches/quix/passthrough.py --bootstrap HOST:PORT --expect N [--group G]
"""

import argparse
import resource
import sys
import time

from quixstreams import Application

from fraud_pipeline import topics_from_metadata_only


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers HOST:PORT")
    p.add_argument("--expect", type=int, required=True, help="exit after this many records")
    p.add_argument("--group", default="quix-passthrough", help="consumer group id")
    p.add_argument("--input-topic", default="transactions")
    p.add_argument("--output-topic", default="passthrough-out")
    args = p.parse_args()
    topics_from_metadata_only()
    app = Application(broker_address=args.bootstrap, consumer_group=args.group,
                      auto_offset_reset="earliest",
                      consumer_extra_config={"fetch.wait.max.ms": 10},
                      producer_extra_config={"linger.ms": 5}, loglevel="WARNING")
    source = app.topic(args.input_topic, key_deserializer="bytes", value_deserializer="bytes")
    sink = app.topic(args.output_topic, key_serializer="bytes", value_serializer="bytes")
    seen = [0]

    def count(value):
        seen[0] += 1
        if seen[0] >= args.expect:
            app.stop()
        return value

    app.dataframe(topic=source).apply(count).to_topic(sink)
    started, cpu = time.monotonic(), cpu_seconds()
    app.run()
    cpu = cpu_seconds() - cpu
    print(f"records {seen[0]} wall {time.monotonic() - started:.2f} s cpu {cpu:.2f} s "
          f"cpu-us/record {cpu / max(seen[0], 1) * 1e6:.2f}")
    return 0 if seen[0] >= args.expect else 1


if __name__ == "__main__":
    sys.exit(main())

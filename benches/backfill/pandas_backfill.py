#!/usr/bin/env python3
"""Fraud-model backfill over Parquet files with pandas + pyarrow + onnxruntime (comparison side
of Streamgate's `streamgate backfill` benchmark).

For each input file, one at a time (never all rows in memory at once):
  read (pandas/pyarrow) -> amount > 0 -> 6 float32 features (vectorised numpy, the SQL of
  pipelines/fraud-scoring.yaml) -> fraud_score (ONNX in process, or OIP v2 over HTTP)
  -> OUTPUT/scored/part-NNNNN.parquet (all scored rows) and
     OUTPUT/alerts/part-NNNNN.parquet (fraud_score > --threshold), both zstd.

Prints one JSON line on stdout at the end:
{"rows_in":..,"rows_scored":..,"alerts":..,"seconds":..}
`seconds` runs from after the imports (model session creation included) to the last file written.
"""

import argparse
import glob
import json
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd

# Columns the features and the output need (currency and customer_age are never used).
READ_COLUMNS = [
    "transaction_id", "card_id", "merchant_id", "merchant_category", "amount",
    "country", "channel", "card_present", "event_time", "distance_from_home_km",
]
OUTPUT_COLUMNS = [
    "transaction_id", "card_id", "merchant_id", "amount", "country", "channel", "event_time",
    "f0", "f1", "f2", "f3", "f4", "f5", "fraud_score",
]
FEATURES = ["f0", "f1", "f2", "f3", "f4", "f5"]
RISKY_CATEGORIES = ["jewelry", "electronics", "gaming"]
RISKY_COUNTRIES = ["NG", "BR"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--input", required=True, nargs="+",
                   help="Parquet file(s) or glob(s), e.g. 'data/*.parquet' (quote globs)")
    p.add_argument("--output", required=True, help="output directory (scored/ and alerts/ go in it)")
    p.add_argument("--model", choices=["onnx", "http"], default="onnx")
    p.add_argument("--model-path", default=os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "..", "models", "fraud", "1", "model.onnx"),
        help="ONNX model for --model onnx (default: the repo's models/fraud/1/model.onnx)")
    p.add_argument("--model-url", help="OIP v2 base URL for --model http, e.g. http://127.0.0.1:8080")
    p.add_argument("--model-name", default="fraud")
    p.add_argument("--threshold", type=float, default=0.5, help="alert when fraud_score > this")
    p.add_argument("--batch-rows", type=int, default=None,
                   help="rows per model call (default: 65536 for onnx, 1000 for http)")
    p.add_argument("--http-workers", type=int, default=4,
                   help="requests in flight for --model http (1 = sequential)")
    args = p.parse_args(argv)
    if args.model == "http" and not args.model_url:
        p.error("--model http needs --model-url")
    if args.batch_rows is None:
        args.batch_rows = 65536 if args.model == "onnx" else 1000
    return args


def add_features(df):
    """The SQL of pipelines/fraud-scoring.yaml: WHERE amount > 0, then f0..f5 as float32."""
    df = df[df["amount"] > 0].copy()
    df["f0"] = np.log(1.0 + df["amount"]).astype(np.float32)
    df["f1"] = np.log(1.0 + df["distance_from_home_km"].fillna(0.0)).astype(np.float32)
    df["f2"] = df["card_present"].eq(True).astype(np.float32)
    df["f3"] = df["channel"].eq("online").astype(np.float32)
    df["f4"] = df["merchant_category"].isin(RISKY_CATEGORIES).astype(np.float32)
    df["f5"] = df["country"].isin(RISKY_COUNTRIES).astype(np.float32)
    return df


class OnnxScorer:
    def __init__(self, path, batch_rows):
        import onnxruntime as ort
        self.session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        self.batch_rows = batch_rows

    def score(self, X):
        out = []
        for i in range(0, len(X), self.batch_rows):
            (scores,) = self.session.run(["fraud_score"], {"features": X[i:i + self.batch_rows]})
            out.append(scores[:, 0])
        return np.concatenate(out) if out else np.empty(0, dtype=np.float32)


class HttpScorer:
    """OIP v2 over HTTP: batches of --batch-rows rows, --http-workers requests in flight, one
    keep-alive requests.Session per worker thread (a Session is not documented as thread-safe)."""

    def __init__(self, base_url, model_name, batch_rows, workers):
        import requests
        self._requests = requests
        self.url = f"{base_url.rstrip('/')}/v2/models/{model_name}/infer"
        self.batch_rows = batch_rows
        self.local = threading.local()
        self.pool = ThreadPoolExecutor(max_workers=max(1, workers))
        self.requests_sent = 0

    def _session(self):
        s = getattr(self.local, "session", None)
        if s is None:
            s = self.local.session = self._requests.Session()
        return s

    def _infer(self, X):
        body = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [len(X), 6],
                            "data": X.ravel().tolist()}]}
        r = self._session().post(self.url, json=body, timeout=60)
        r.raise_for_status()
        data = r.json()["outputs"][0]["data"]
        if len(data) != len(X):
            raise RuntimeError(f"model returned {len(data)} scores for {len(X)} rows")
        return np.asarray(data, dtype=np.float32)

    def score(self, X):
        batches = [X[i:i + self.batch_rows] for i in range(0, len(X), self.batch_rows)]
        self.requests_sent += len(batches)
        out = list(self.pool.map(self._infer, batches))  # keeps batch order
        return np.concatenate(out) if out else np.empty(0, dtype=np.float32)


def main(argv=None):
    args = parse_args(argv)
    started = time.perf_counter()

    files = sorted({f for pattern in args.input for f in glob.glob(pattern)})
    if not files:
        print(f"no input files match {args.input}", file=sys.stderr)
        return 2
    scored_dir = os.path.join(args.output, "scored")
    alerts_dir = os.path.join(args.output, "alerts")
    os.makedirs(scored_dir, exist_ok=True)
    os.makedirs(alerts_dir, exist_ok=True)

    if args.model == "onnx":
        scorer = OnnxScorer(args.model_path, args.batch_rows)
    else:
        scorer = HttpScorer(args.model_url, args.model_name, args.batch_rows, args.http_workers)

    rows_in = rows_scored = alerts = 0
    for n, path in enumerate(files):
        df = pd.read_parquet(path, columns=READ_COLUMNS)
        rows_in += len(df)
        df = add_features(df)
        X = np.ascontiguousarray(df[FEATURES].to_numpy(dtype=np.float32))
        df["fraud_score"] = scorer.score(X)
        out = df[OUTPUT_COLUMNS]
        hits = out[out["fraud_score"] > args.threshold]
        out.to_parquet(os.path.join(scored_dir, f"part-{n:05d}.parquet"),
                       compression="zstd", index=False)
        hits.to_parquet(os.path.join(alerts_dir, f"part-{n:05d}.parquet"),
                        compression="zstd", index=False)
        rows_scored += len(out)
        alerts += len(hits)
        print(f"{path}: {len(df)} scored, {len(hits)} alerts", file=sys.stderr)
        del df, X, out, hits

    result = {"rows_in": rows_in, "rows_scored": rows_scored, "alerts": alerts,
              "seconds": round(time.perf_counter() - started, 3)}
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

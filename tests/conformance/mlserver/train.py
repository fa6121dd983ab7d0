#!/usr/bin/env python3
"""Train a tiny deterministic fraud classifier and lay out an MLServer model dir.

Usage: train.py OUTPUT_DIR

Writes into OUTPUT_DIR:
  model.joblib          sklearn LogisticRegression (6 float32 features -> 2 classes)
  model-settings.json   mlserver_sklearn runtime, name "fraud-sklearn", version "v1"
  settings.json         server settings that never change between runs
                        (ports/host are passed as MLSERVER_* env vars, see start.sh)

Features (float32, in this order):
  f0 = ln(1 + amount)          amount in currency units
  f1 = ln(1 + distance_km)     distance from the card holder's usual location
  f2 = is_foreign              0/1
  f3 = is_night                0/1  (transaction between 00:00 and 05:00)
  f4 = card_not_present        0/1
  f5 = new_merchant            0/1
Class 1 = fraud. Deterministic: fixed seed, deterministic solver.
"""
import json
import os
import sys

import joblib
import numpy as np
from sklearn.linear_model import LogisticRegression

SEED = 20240607
N_SAMPLES = 5000
MODEL_NAME = "fraud-sklearn"
MODEL_VERSION = "v1"


def make_data(n: int, seed: int):
    rng = np.random.default_rng(seed)
    amount = rng.lognormal(mean=3.5, sigma=1.2, size=n)          # ~33 median
    distance_km = rng.lognormal(mean=2.0, sigma=1.5, size=n)     # ~7 km median
    is_foreign = rng.random(n) < 0.08
    is_night = rng.random(n) < 0.15
    card_not_present = rng.random(n) < 0.35
    new_merchant = rng.random(n) < 0.20

    x = np.column_stack(
        [
            np.log1p(amount),
            np.log1p(distance_km),
            is_foreign,
            is_night,
            card_not_present,
            new_merchant,
        ]
    ).astype(np.float32)

    # Ground-truth logit of a fraud-ish generating process.
    logit = (
        -9.0
        + 0.9 * x[:, 0]
        + 0.6 * x[:, 1]
        + 1.8 * x[:, 2]
        + 1.1 * x[:, 3]
        + 1.3 * x[:, 4]
        + 0.9 * x[:, 5]
    )
    p = 1.0 / (1.0 + np.exp(-logit))
    y = (rng.random(n) < p).astype(np.int64)
    return x, y


def main() -> int:
    if len(sys.argv) != 2:
        print(f"usage: {sys.argv[0]} OUTPUT_DIR", file=sys.stderr)
        return 2
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)

    x, y = make_data(N_SAMPLES, SEED)
    model = LogisticRegression(solver="lbfgs", C=1.0, max_iter=1000, random_state=SEED)
    model.fit(x, y)
    joblib.dump(model, os.path.join(out, "model.joblib"))

    model_settings = {
        "name": MODEL_NAME,
        "implementation": "mlserver_sklearn.SKLearnModel",
        "versions": [MODEL_VERSION],
        "platform": "sklearn",
        # Informational only (served by GET /v2/models/fraud-sklearn): MLServer
        # does not check request name/shape/datatype against it.
        "inputs": [
            {
                "name": "features",
                "datatype": "FP32",
                "shape": [-1, 6],
                "parameters": {"content_type": "np"},
            }
        ],
        # Informational only: MLServer does not validate requests against this
        # metadata. predict_proba's dtype follows the request's dtype: FP32 in
        # -> FP32 out (FP64/INT* in -> FP64 out).
        "outputs": [
            {"name": "predict_proba", "datatype": "FP32", "shape": [-1, 2]},
        ],
        "parameters": {
            "uri": "./model.joblib",
            "version": MODEL_VERSION,
            # Make predict_proba the default output when a request names none
            # (mlserver_sklearn's own default would be "predict" -> INT64 labels).
            "extra": {"predict_fn": "predict_proba"},
        },
    }
    with open(os.path.join(out, "model-settings.json"), "w") as f:
        json.dump(model_settings, f, indent=2)
        f.write("\n")

    # Only settings that are the same for every run live here. Values in this
    # file take precedence over MLSERVER_* env vars, so host/ports are NOT set
    # here: start.sh passes them via the environment.
    settings = {
        "debug": False,
        "parallel_workers": 0,
        "load_models_at_startup": True,
    }
    with open(os.path.join(out, "settings.json"), "w") as f:
        json.dump(settings, f, indent=2)
        f.write("\n")

    acc = float((model.predict(x) == y).mean())
    print(
        json.dumps(
            {
                "out_dir": out,
                "n_samples": int(N_SAMPLES),
                "fraud_rate": round(float(y.mean()), 4),
                "train_accuracy": round(acc, 4),
                "coef": [round(float(c), 4) for c in model.coef_[0]],
                "intercept": round(float(model.intercept_[0]), 4),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

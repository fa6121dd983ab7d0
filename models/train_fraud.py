#!/usr/bin/env python3
"""Train the small demo fraud model and export it as ONNX.

What it does
------------
1. Generates synthetic card transactions that mimic ``src/demo/generator.rs``
   (amount: 3% in 2000..9000, else 1..250, rounded to cents; channel pos/online/atm;
   card_present = channel != "online"; 7 merchant categories; 8 countries;
   customer_age 18..89; distance_from_home_km: 5% in 500..9000, else 0..40, rounded to 0.1).
2. Labels fraud with a hidden logistic rule plus Bernoulli noise (large amounts far from
   home, card-not-present purchases in high-risk categories and risky countries raise the
   odds), giving roughly 2-5% positives. The rule uses raw fields and interactions the
   model only sees through its features, so the model is good but not perfect.
3. Computes the 6 float32 features the Rust pipeline computes in SQL (same order):
     f0 = ln(1 + amount)
     f1 = ln(1 + distance_from_home_km)
     f2 = 1.0 if card_present else 0.0
     f3 = 1.0 if channel == 'online' else 0.0
     f4 = 1.0 if merchant_category in ('jewelry', 'electronics', 'gaming') else 0.0
     f5 = 1.0 if country in ('NG', 'BR') else 0.0
   (f0, f1 are computed in float64 and then cast to float32, like
   ``CAST(ln(1.0 + x) AS FLOAT)`` in SQL.)
4. Trains a 6 -> 16 (ReLU) -> 1 (sigmoid) MLP with numpy only (mini-batch Adam on
   binary cross-entropy, a few seconds) and reports accuracy and ROC AUC on a held-out 20% split.
5. Exports an ONNX graph (opset 13, IR version 8) with onnx.helper:
     input  ``features``    float32 [N, 6]   (N is a symbolic batch dimension)
     output ``fraud_score`` float32 [N, 1]   (probability of fraud, 0..1)
   ops: Gemm -> Relu -> Gemm -> Sigmoid. Saved to ``models/fraud/1/model.onnx``
   (Triton-style layout models/<name>/<version>/model.onnx) and checked with onnx.checker.
6. Writes ``models/fraud/reference.jsonl``: 1000 held-out rows, one JSON object per line,
   ``{"features": [6 float32 values], "fraud_score": <onnxruntime output>}``. 800 rows are
   a random held-out sample and 200 are the highest-scoring held-out rows (so the file
   covers high-risk scores too); the rows are shuffled.

How to rerun
------------
    python models/train_fraud.py        # from the repository root (any cwd works)

Needs numpy, onnx and onnxruntime (e.g. the venv at /root/.cache/streamgate-venv:
``/root/.cache/streamgate-venv/bin/python models/train_fraud.py``). Everything is seeded
(SEED below), so reruns with the same package versions produce the same model and
reference file.
"""

import json
import os
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

SEED = 20261126
N_ROWS = 200_000
HIDDEN = 16
STEPS = 1500
BATCH = 8192
LR = 0.01  # decayed linearly to LR / 10 over the run

CATEGORIES = ["grocery", "electronics", "travel", "restaurant", "fuel", "jewelry", "gaming"]
COUNTRIES = ["US", "GB", "DE", "FR", "NL", "BR", "NG", "SG"]
CHANNELS = ["pos", "online", "atm"]
HIGH_RISK_CATEGORIES = {"jewelry", "electronics", "gaming"}
RISKY_COUNTRIES = {"NG", "BR"}

HERE = os.path.dirname(os.path.abspath(__file__))
MODEL_PATH = os.path.join(HERE, "fraud", "1", "model.onnx")
REFERENCE_PATH = os.path.join(HERE, "fraud", "reference.jsonl")


def generate(rng, n):
    """Synthetic transactions as a dict of numpy arrays, like src/demo/generator.rs."""
    large = rng.random(n) < 0.03
    amount = np.where(large, rng.uniform(2000.0, 9000.0, n), rng.uniform(1.0, 250.0, n))
    amount = np.round(amount, 2)  # the generator prints {:.2}
    channel = np.array(CHANNELS)[rng.integers(0, len(CHANNELS), n)]
    card_present = channel != "online"
    category = np.array(CATEGORIES)[rng.integers(0, len(CATEGORIES), n)]
    country = np.array(COUNTRIES)[rng.integers(0, len(COUNTRIES), n)]
    age = rng.integers(18, 90, n)
    far = rng.random(n) < 0.05
    distance = np.where(far, rng.uniform(500.0, 9000.0, n), rng.uniform(0.0, 40.0, n))
    distance = np.round(distance, 1)  # the generator prints {:.1}
    return dict(amount=amount, channel=channel, card_present=card_present,
                merchant_category=category, country=country, customer_age=age,
                distance_from_home_km=distance)


def label(rng, tx):
    """Hidden fraud rule: a logistic model on raw fields, sampled (so labels are noisy)."""
    amount, dist = tx["amount"], tx["distance_from_home_km"]
    online = tx["channel"] == "online"
    high_risk_cat = np.isin(tx["merchant_category"], list(HIGH_RISK_CATEGORIES))
    risky_country = np.isin(tx["country"], list(RISKY_COUNTRIES))
    young = tx["customer_age"] < 25  # not a model feature: irreducible noise
    logit = (
        -5.2
        + 1.6 * (amount > 1500)
        + 1.4 * (dist > 300)
        + 2.2 * ((amount > 1500) & (dist > 300))
        + 0.5 * online
        + 1.8 * (online & high_risk_cat)
        + 1.3 * risky_country
        + 0.6 * (risky_country & online)
        + 0.4 * young
        + 0.15 * np.log1p(amount) / np.log(9000.0)
    )
    p = 1.0 / (1.0 + np.exp(-logit))
    return (rng.random(len(p)) < p).astype(np.float32)


def features(tx):
    """The 6 model features, float32, in the order the SQL computes them."""
    f0 = np.log(1.0 + tx["amount"]).astype(np.float32)
    f1 = np.log(1.0 + tx["distance_from_home_km"]).astype(np.float32)
    f2 = tx["card_present"].astype(np.float32)
    f3 = (tx["channel"] == "online").astype(np.float32)
    f4 = np.isin(tx["merchant_category"], list(HIGH_RISK_CATEGORIES)).astype(np.float32)
    f5 = np.isin(tx["country"], list(RISKY_COUNTRIES)).astype(np.float32)
    return np.stack([f0, f1, f2, f3, f4, f5], axis=1)


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def forward(params, x):
    w1, b1, w2, b2 = params
    h = np.maximum(x @ w1 + b1, 0.0)
    return h, sigmoid(h @ w2 + b2)


def train(rng, x, y):
    """Mini-batch Adam on mean binary cross-entropy (float64 weights during training)."""
    x = x.astype(np.float64)
    y = y.astype(np.float64).reshape(-1, 1)
    n, d = x.shape
    w1 = rng.normal(0.0, np.sqrt(2.0 / d), (d, HIDDEN))
    b1 = np.zeros(HIDDEN)
    w2 = rng.normal(0.0, np.sqrt(1.0 / HIDDEN), (HIDDEN, 1))
    b2 = np.array([np.log(y.mean() / (1.0 - y.mean()))])  # start at the base rate
    params = [w1, b1, w2, b2]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    for step in range(1, STEPS + 1):
        batch = rng.integers(0, n, BATCH)
        xb, yb = x[batch], y[batch]
        lr = LR * (1.0 - 0.9 * (step - 1) / (STEPS - 1))
        h, p = forward(params, xb)
        dz2 = (p - yb) / BATCH
        gw2 = h.T @ dz2
        gb2 = dz2.sum(axis=0)
        dh = (dz2 @ w2.T) * (h > 0)
        gw1 = xb.T @ dh
        gb1 = dh.sum(axis=0)
        for i, g in enumerate([gw1, gb1, gw2, gb2]):
            m[i] = beta1 * m[i] + (1 - beta1) * g
            v[i] = beta2 * v[i] + (1 - beta2) * g * g
            mh = m[i] / (1 - beta1 ** step)
            vh = v[i] / (1 - beta2 ** step)
            params[i] -= lr * mh / (np.sqrt(vh) + eps)
        w1, b1, w2, b2 = params
        if step % 300 == 0 or step == 1:
            _, p = forward(params, x)
            pc = np.clip(p, 1e-7, 1 - 1e-7)
            loss = -np.mean(y * np.log(pc) + (1 - y) * np.log(1 - pc))
            print(f"  step {step:5d}  train loss {loss:.5f}")
    return [p.astype(np.float32) for p in params]


def roc_auc(y, s):
    """ROC AUC via the rank-sum (Mann-Whitney) statistic, with average ranks for ties."""
    y = np.asarray(y).ravel()
    s = np.asarray(s, dtype=np.float64).ravel()
    order = np.argsort(s, kind="mergesort")
    s_sorted = s[order]
    ranks = np.empty(len(s))
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and s_sorted[j + 1] == s_sorted[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    pos = y == 1
    n_pos, n_neg = pos.sum(), (~pos).sum()
    return (ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def export_onnx(params, path):
    w1, b1, w2, b2 = params
    inits = [
        numpy_helper.from_array(w1, "w1"),
        numpy_helper.from_array(b1, "b1"),
        numpy_helper.from_array(w2, "w2"),
        numpy_helper.from_array(b2, "b2"),
    ]
    nodes = [
        helper.make_node("Gemm", ["features", "w1", "b1"], ["hidden_pre"], name="dense1"),
        helper.make_node("Relu", ["hidden_pre"], ["hidden"], name="relu1"),
        helper.make_node("Gemm", ["hidden", "w2", "b2"], ["logit"], name="dense2"),
        helper.make_node("Sigmoid", ["logit"], ["fraud_score"], name="sigmoid"),
    ]
    graph = helper.make_graph(
        nodes,
        "fraud_mlp",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 6])],
        [helper.make_tensor_value_info("fraud_score", TensorProto.FLOAT, ["N", 1])],
        initializer=inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 13)],
        producer_name="streamgate-train_fraud",
        producer_version="1",
        doc_string="Streamgate demo fraud MLP 6->16->1. Input features f0..f5 "
                   "(see models/README.md); output fraud probability.",
    )
    model.ir_version = 8  # IR 8 pairs with opset 13; loadable by older runtimes and tract
    onnx.checker.check_model(model, full_check=True)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    onnx.save(model, path)
    return model


def main():
    t0 = time.time()
    rng = np.random.default_rng(SEED)
    tx = generate(rng, N_ROWS)
    y = label(rng, tx)
    x = features(tx)
    print(f"generated {N_ROWS} transactions, fraud rate {y.mean():.4f}")

    idx = rng.permutation(N_ROWS)
    n_test = N_ROWS // 5
    test_idx, train_idx = idx[:n_test], idx[n_test:]
    x_tr, y_tr, x_te, y_te = x[train_idx], y[train_idx], x[test_idx], y[test_idx]

    params = train(rng, x_tr, y_tr)
    _, p_te = forward([p.astype(np.float64) for p in params], x_te.astype(np.float64))
    p_te = p_te.ravel()
    acc = np.mean((p_te >= 0.5) == (y_te == 1))
    auc = roc_auc(y_te, p_te)
    base_acc = 1.0 - y_te.mean()
    print(f"held-out: n={n_test} positives={int(y_te.sum())} ({y_te.mean():.4f})")
    print(f"held-out accuracy@0.5 {acc:.4f} (majority-class baseline {base_acc:.4f})")
    print(f"held-out ROC AUC {auc:.4f}")

    export_onnx(params, MODEL_PATH)
    sess = ort.InferenceSession(MODEL_PATH, providers=["CPUExecutionProvider"])
    ort_te = sess.run(["fraud_score"], {"features": x_te})[0].ravel()
    max_diff = float(np.max(np.abs(ort_te - p_te)))
    print(f"onnxruntime vs numpy max |diff| on held-out: {max_diff:.2e}")
    print(f"onnxruntime held-out ROC AUC {roc_auc(y_te, ort_te):.4f}")

    # Reference rows: 800 random held-out rows + the 200 highest-scoring held-out rows.
    top = np.argsort(-ort_te, kind="mergesort")[:200]
    rest = np.setdiff1d(np.arange(n_test), top)
    sample = rng.choice(rest, 800, replace=False)
    ref = rng.permutation(np.concatenate([top, sample]))
    ref_x = x_te[ref]
    ref_scores = sess.run(["fraud_score"], {"features": ref_x})[0]
    with open(REFERENCE_PATH, "w") as f:
        for row, score in zip(ref_x, ref_scores):
            # float(np.float32) is exact; json writes the shortest repr of that double,
            # which parses back to the identical float32 value.
            f.write(json.dumps({"features": [float(v) for v in row],
                                "fraud_score": float(score[0])}) + "\n")
    s = ref_scores.ravel()
    print(f"wrote {len(ref)} reference rows to {REFERENCE_PATH}: "
          f"score min {s.min():.6f} max {s.max():.6f} mean {s.mean():.6f}")
    print(f"model {MODEL_PATH}: {os.path.getsize(MODEL_PATH)} bytes")
    print(f"done in {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()

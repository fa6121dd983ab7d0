#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (fuzz/corpus/<target>/) from small real
examples: demo-generator-like JSON transactions, Avro datums of schemas/transaction.avsc
(hand-encoded: zigzag varints, length-prefixed strings, little-endian doubles), the repo's
pipeline and gateway files, OIP v2 requests (JSON and binary tensors), OpenAI bodies and JWTs.

Deterministic but for the ES256 signatures (ECDSA picks a random nonce). The ES256 key is
derived from a fixed scalar: a fuzzing-only key whose public half src/fuzzing.rs embeds (the
script prints it). Needs Python 3, and `cryptography` for the ES256 seeds only.

    python3 fuzz/make_seeds.py
"""

import base64
import hashlib
import hmac
import json
import pathlib
import shutil
import struct

ROOT = pathlib.Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"

# Must match src/fuzzing.rs.
JWT_SECRET = b"streamgate-fuzz-hs256-secret"
JWT_ISSUER = "https://idp.example"
JWT_AUDIENCE = "streamgate"
JWT_FAR_FUTURE = 4102444800  # 2100-01-01


def write(target, name, data):
    folder = CORPUS / target
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    (folder / name).write_bytes(data)


# ---------------------------------------------------------------- Avro


def zigzag(n):
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def a_long(n):
    return zigzag(n)


def a_str(s):
    b = s.encode()
    return a_long(len(b)) + b


def a_double(x):
    return struct.pack("<d", x)


def a_float(x):
    return struct.pack("<f", x)


def a_bool(b):
    return b"\x01" if b else b"\x00"


CHANNELS = ["pos", "online", "atm"]


def transaction_datum(tx):
    out = b""
    for f in ["transaction_id", "card_id", "merchant_id", "merchant_category"]:
        out += a_str(tx[f])
    out += a_double(tx["amount"])
    out += a_str(tx["currency"])
    out += a_str(tx["country"])
    out += a_long(CHANNELS.index(tx["channel"]))
    out += a_bool(tx["card_present"])
    out += a_long(tx["event_time_ms"])
    out += a_long(0) if tx["customer_age"] is None else a_long(1) + a_long(tx["customer_age"])
    d = tx["distance_from_home_km"]
    out += a_long(0) if d is None else a_long(1) + a_double(d)
    return out


# Writer schema id 2 of src/fuzzing.rs: amount is a float, an extra `risk_hint`, no
# `distance_from_home_km`, and a `kiosk` channel the reader does not know.
EVOLVED_CHANNELS = ["pos", "online", "atm", "kiosk"]


def evolved_datum(tx, channel):
    out = b""
    for f in ["transaction_id", "card_id", "merchant_id", "merchant_category"]:
        out += a_str(tx[f])
    out += a_float(tx["amount"])
    out += a_str(tx["currency"])
    out += a_str(tx["country"])
    out += a_long(EVOLVED_CHANNELS.index(channel))
    out += a_bool(tx["card_present"])
    out += a_long(tx["event_time_ms"])
    out += a_long(1) + a_long(tx["customer_age"])
    out += a_str("low")  # risk_hint
    return out


def order_datum(geo, items, attributes):
    out = a_str("o-1")
    out += a_str("m-7")  # merchant.id
    out += a_long(1) + a_str("grocery")  # merchant.category
    out += a_long(0) if geo is None else a_long(1) + a_double(geo[0]) + a_double(geo[1])
    if items is None:
        out += a_long(0)
    else:
        out += a_long(1) + a_long(len(items)) + b"".join(a_str(i) for i in items) + a_long(0)
    if attributes is None:
        out += a_long(0)
    else:
        out += a_long(1) + a_long(len(attributes))
        for k, v in attributes.items():
            out += a_str(k) + a_str(v)
        out += a_long(0)
    return out


def framed(schema_id, datum):
    return b"\x00" + struct.pack(">I", schema_id) + datum


BASE_MS = 1_795_651_200_000


def tx(i, **changes):
    t = {
        "transaction_id": f"tx-{i:012}",
        "card_id": f"card-{(i * 7919) % 50000:06}",
        "merchant_id": f"m-{(i * 104729) % 5000:05}",
        "merchant_category": ["grocery", "electronics", "travel", "jewelry"][i % 4],
        "amount": [12.5, 249.99, 4810.0, 1.0][i % 4],
        "currency": "USD",
        "country": ["US", "GB", "DE", "NG"][i % 4],
        "channel": CHANNELS[i % 3],
        "card_present": i % 3 != 1,
        "event_time_ms": BASE_MS + i * 37,
        "customer_age": [None, 34, 18, 89][i % 4],
        "distance_from_home_km": [None, 3.5, 812.0, 0.0][i % 4],
    }
    t.update(changes)
    return t


def tx_json(t):
    ms = t["event_time_ms"]
    secs = ms // 1000
    v = {k: t[k] for k in t if k != "event_time_ms"}
    v["event_time"] = "2026-11-26T%02d:%02d:%02d.%03dZ" % (
        (secs // 3600) % 24,
        (secs // 60) % 60,
        secs % 60,
        ms % 1000,
    )
    return json.dumps(v, separators=(",", ":"))


def avro_seeds():
    for i in range(3):
        write("avro_plain", f"transaction-{i}", transaction_datum(tx(i)))
    write("avro_plain", "order-nested", order_datum((48.85, 2.35), ["a", "b"], {"k": "v"}))
    write("avro_plain", "order-nulls", order_datum(None, None, None))
    write("avro_plain", "truncated", transaction_datum(tx(0))[:20])
    write("avro_plain", "empty", b"")
    write("avro_confluent", "id1-transaction", framed(1, transaction_datum(tx(1))))
    write("avro_confluent", "id2-evolved", framed(2, evolved_datum(tx(2), "online")))
    write("avro_confluent", "id2-unknown-symbol", framed(2, evolved_datum(tx(2), "kiosk")))
    write("avro_confluent", "id3-incompatible", framed(3, order_datum(None, ["x"], None)))
    write("avro_confluent", "id9-unknown", framed(9, transaction_datum(tx(0))))
    write("avro_confluent", "bad-magic", b"\x01" + framed(1, transaction_datum(tx(0)))[1:])
    write("avro_confluent", "short-header", b"\x00\x00\x00")


# ---------------------------------------------------------------- JSON records


def json_seeds():
    lines = [tx_json(tx(i)) for i in range(4)]
    write("json_records", "transactions", "\n".join(lines))
    write("json_records", "one-transaction", lines[0])
    bad = [
        lines[0],
        '{"transaction_id": "t1", "amount": 1',
        lines[1] + '{"a": 1}',
        "[1, 2]",
        lines[1].replace('"amount":249.99', '"amount":"abc"'),
        lines[3].replace('"card_id":', '"card_idx":'),
        lines[1].replace("2026-11-26T", "not a time "),
        '{"b": true, "i32": 2147483648, "i64": -9223372036854775808, "f32": 3.4e39, "f64": 1e308, "s": "\\u00e9", "ts": "2026-11-26T00:00:00+02:00", "d": "2026-02-30"}',
    ]
    write("json_records", "mixed-failures", "\n".join(bad))
    order = {
        "order_id": "o-1",
        "merchant": {"id": "m-7", "category": None, "geo": {"lat": 1.5, "lon": -2}},
        "items": ["a", "b"],
        "attributes": {"k": "v"},
    }
    write("json_records", "nested-order", json.dumps(order))
    write(
        "json_records",
        "typed-columns",
        '{"b": false, "i32": -7, "i64": 9007199254740993, "f32": 1.5, "f64": -0.0, "s": "x", "ts": 1795651200000, "d": "2026-11-26"}\n'
        '{"b": null, "i32": null, "i64": null, "f32": null, "f64": null, "s": null, "ts": "2026-11-26T23:59:59.999Z", "d": null}',
    )


# ---------------------------------------------------------------- YAML


def yaml_seeds():
    for f in sorted((ROOT / "pipelines").glob("*.yaml")):
        write("spec_pipeline", f.name, f.read_bytes())
    for name in ["many_errors", "missing_env_var", "model_errors", "wrong_type", "yaml_syntax"]:
        f = ROOT / "tests" / "data" / "invalid" / f"{name}.yaml"
        if f.exists():
            write("spec_pipeline", f"invalid-{f.name}", f.read_bytes())
    write("spec_gateway", "models-gateway.yaml", (ROOT / "models" / "gateway.yaml").read_bytes())
    write(
        "spec_gateway",
        "jwt.yaml",
        """listen: 127.0.0.1:0
models:
  scorer:
    versions:
      - name: v1
        endpoint: { protocol: oip_v2, replicas: ["http://127.0.0.1:9"] }
auth:
  jwt:
    algorithms: [ES256, HS256]
    issuer: https://idp.example
    audience: streamgate
    hs256_secret: "${JWT_SECRET:-hs-secret-canary}"
    public_key_file: ec.pem
    leeway_seconds: 0
""",
    )
    write(
        "spec_gateway",
        "translate.yaml",
        """listen: 127.0.0.1:0
models:
  fraud:
    versions:
      - name: local
        endpoint: { protocol: onnx, repository: ., model_name: fraud, layout: { type: matrix, name: features } }
  tfs:
    versions:
      - name: v1
        endpoint: { protocol: tf_serving, replicas: ["http://127.0.0.1:9"], model_name: m }
        oip_outputs: [{ column: score, from: predictions, type: float64 }]
  custom:
    versions:
      - name: v1
        endpoint: { protocol: custom_json, replicas: ["http://127.0.0.1:9"], path: /score }
        oip_outputs: [{ column: score, from: /score, type: float32 }]
auth:
  api_keys:
    - { name: all, sha256: 3e47bfce6d671fa059509f700edc83baa78f09f3522c3576878b745fd800eb54, scopes: ["infer:*"] }
""",
    )


# ---------------------------------------------------------------- OIP v2


def oip_json(body):
    return b"\x00" + body.encode()


def oip_binary(header, data):
    h = header.encode()
    return b"\x01" + struct.pack("<I", len(h)) + h + data


def oip_seeds():
    write(
        "oip_request",
        "json-tensors",
        oip_json(
            """{"id": "r1", "inputs": [
  {"name": "amount", "shape": [2], "datatype": "FP64", "data": [1.5, 2.5]},
  {"name": "features", "shape": [2, 3], "datatype": "FP32", "data": [[1, 2, 3], [4, 5, 6]]},
  {"name": "country", "shape": [2, 1], "datatype": "BYTES", "data": ["FR", "DE"]}
], "outputs": [{"name": "score", "parameters": {"binary_data": true}}]}"""
        ),
    )
    write(
        "oip_request",
        "json-ints",
        oip_json(
            """{"inputs": [
  {"name": "a", "shape": [3], "datatype": "INT8", "data": [1, -128, 127]},
  {"name": "b", "shape": [3], "datatype": "UINT64", "data": [0, 1, 18446744073709551615]},
  {"name": "c", "shape": [3], "datatype": "BOOL", "data": [true, false, true]}
], "parameters": {"binary_data_output": true}}"""
        ),
    )
    data = struct.pack("<ff", 1.5, 2.5)
    for s in [b"ab", b"c"]:
        data += struct.pack("<I", len(s)) + s
    write(
        "oip_request",
        "binary-tensors",
        oip_binary(
            """{"inputs": [
  {"name": "x", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 8}},
  {"name": "s", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": 11}}
]}""",
            data,
        ),
    )
    features = b"".join(struct.pack("<f", v) for v in [0.1, 0.2, 0.3, 0.4, 0.5, 0.6] * 2)
    write(
        "oip_request",
        "binary-matrix",
        oip_binary(
            '{"id": "r-7", "inputs": [{"name": "features", "shape": [2, 6], "datatype": "FP32", '
            '"parameters": {"binary_data_size": 48}}], "outputs": [{"name": "score", "parameters": {"binary_data": true}}]}',
            features,
        ),
    )
    ints = struct.pack("<hhiiqq", -1, 2, -3, 4, -5, 6) + bytes([1, 0])
    write(
        "oip_request",
        "binary-ints",
        oip_binary(
            '{"inputs": [{"name": "a", "shape": [2], "datatype": "INT16", "parameters": {"binary_data_size": 4}},'
            '{"name": "b", "shape": [2], "datatype": "INT32", "parameters": {"binary_data_size": 8}},'
            '{"name": "c", "shape": [2], "datatype": "INT64", "parameters": {"binary_data_size": 16}},'
            '{"name": "d", "shape": [2], "datatype": "BOOL", "parameters": {"binary_data_size": 2}}]}',
            ints,
        ),
    )


# ---------------------------------------------------------------- OpenAI


def openai_seeds():
    write(
        "openai_body",
        "chat",
        '{"model":"chat","messages":[{"role":"system","content":"You score transactions."},'
        '{"role":"user","content":"hi \\"there\\" \\u00e9"}],"temperature":0.2,"stream":false}',
    )
    write("openai_body", "embeddings", '{"input":["x","y"],"model":"emb","extra":{"nested":{"model":"not me"}}}')
    write("openai_body", "escaped-key", '{"we\\u0069rd":1,"model":"chat"}')
    write("openai_body", "spaces", '{ "messages" : [ ] , "model" : "chat" , "stream" : true, "n": 1.5e3 }')
    write("openai_body", "no-model", '{"messages":[]}')


# ---------------------------------------------------------------- JWT


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(**changes):
    c = {
        "sub": "svc-fraud",
        "iss": JWT_ISSUER,
        "aud": JWT_AUDIENCE,
        "exp": JWT_FAR_FUTURE,
        "nbf": 1700000000,
        "scope": "infer:* admin:read",
    }
    c.update(changes)
    return c


def hs256(header, body):
    signing_input = b64(json.dumps(header).encode()) + "." + b64(json.dumps(body).encode())
    sig = hmac.new(JWT_SECRET, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64(sig)


def ec_key():
    from cryptography.hazmat.primitives.asymmetric import ec

    scalar = int.from_bytes(hashlib.sha256(b"streamgate fuzzing ES256 key").digest(), "big")
    return ec.derive_private_key(scalar, ec.SECP256R1())


def es256(header, body):
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    signing_input = b64(json.dumps(header).encode()) + "." + b64(json.dumps(body).encode())
    der = ec_key().sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    return signing_input + "." + b64(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


def jwt_seeds():
    hs = {"alg": "HS256", "typ": "JWT"}
    token = lambda t: b"\x00" + t.encode()
    write("jwt", "hs256-valid", token(hs256(hs, claims())))
    write("jwt", "hs256-scope-list", token(hs256(hs, claims(scope=["infer:scorer", "openid"], aud=["a", JWT_AUDIENCE]))))
    write("jwt", "hs256-expired", token(hs256(hs, claims(exp=1700000000))))
    write("jwt", "hs256-wrong-secret", token(hs256(hs, claims())[:-4] + "AAAA"))
    write("jwt", "alg-none", token(b64(b'{"alg":"none","typ":"JWT"}') + "." + b64(json.dumps(claims()).encode()) + "."))
    write("jwt", "malformed", token("a.b.c"))
    try:
        write("jwt", "es256-kid", token(es256({"alg": "ES256", "typ": "JWT", "kid": "k1"}, claims())))
        write("jwt", "es256-no-kid", token(es256({"alg": "ES256", "typ": "JWT"}, claims())))
    except ImportError:
        print("cryptography is not installed: no ES256 seeds")
    # Mode 1: the harness signs `header \n claims` with the HS256 secret itself.
    write("jwt", "signed-claims", b"\x01" + json.dumps(claims()).encode())
    write(
        "jwt",
        "signed-header-and-claims",
        b"\x01" + b'{"alg":"HS256","kid":"x","typ":"JWT"}\n' + json.dumps(claims(exp=1e300, nbf="soon")).encode(),
    )


def print_public_key():
    try:
        from cryptography.hazmat.primitives import serialization
    except ImportError:
        return
    public = ec_key().public_key()
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    numbers = public.public_numbers()
    print(pem.decode().strip())
    print("x =", b64(numbers.x.to_bytes(32, "big")))
    print("y =", b64(numbers.y.to_bytes(32, "big")))


if __name__ == "__main__":
    if CORPUS.exists():
        shutil.rmtree(CORPUS)
    json_seeds()
    avro_seeds()
    yaml_seeds()
    oip_seeds()
    openai_seeds()
    jwt_seeds()
    print_public_key()
    for d in sorted(CORPUS.iterdir()):
        print(d.name, len(list(d.iterdir())))

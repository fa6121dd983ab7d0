"""Runs the TensorZero gateway that ships inside the `tensorzero` PyPI wheel as an HTTP server.

The wheel has no standalone gateway binary; its native module (tensorzero.abi3.so) embeds the
gateway and exposes `_start_http_gateway`, which starts the real TensorZero HTTP gateway
(the Rust axum server, on its own tokio runtime) on an ephemeral loopback port. It is what
`tensorzero.patch_openai_client` uses. This script starts it, prints `url=<base>` and sleeps;
the Python interpreter does nothing while requests are served.

usage: tensorzero_gateway.py CONFIG.toml
"""

import sys
import time

import tensorzero

gateway = tensorzero._start_http_gateway(
    config_file=sys.argv[1],
    clickhouse_url=None,
    postgres_url=None,
    valkey_url=None,
    async_setup=False,
)
print(f"url={gateway.base_url}", flush=True)
while True:
    time.sleep(3600)

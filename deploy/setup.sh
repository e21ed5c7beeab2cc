#!/usr/bin/env bash
# Set up a development machine from nothing: a virtualenv in .venv with the project and
# its test dependencies, and the Kafka broker's jars (from Maven Central) for the tests.
# Needs python3 (>= 3.11); Java 17 and Maven for the Kafka part (skipped with a warning
# when absent: the quickstart runs on the embedded log and needs neither).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev,bench]'

if ! { command -v java && command -v mvn; } >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    # As root on Debian (CI machines): bring Java and Maven for the Kafka broker.
    apt-get update -qq && apt-get install -y -qq default-jre-headless maven >/dev/null
fi
if command -v java >/dev/null && command -v mvn >/dev/null; then
    deploy/kafka/kafka.sh fetch
else
    echo "warning: java or mvn missing: the Kafka tests will fail (the quickstart does not need Kafka)" >&2
fi

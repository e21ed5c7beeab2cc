#!/usr/bin/env bash
# Set up a development machine from nothing: a virtualenv in .venv with the project, its
# test dependencies and the Spark extra (pyspark at the version deploy/spark/pom.xml pins),
# and the jars (from Maven Central) of the Kafka broker and of Spark's Avro reader.
# Needs python3 (>= 3.11); Java 17 and Maven for the Kafka and Spark parts, and kcat for
# the test of the kcat recipe in docs/api.md (all installed with apt-get when run as root
# on Debian; otherwise skipped with a warning: the quickstart runs on the embedded log and
# needs none of them).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
SPARK_VERSION=$(deploy/spark/fetch.sh version)
.venv/bin/python -m pip install --quiet -e '.[dev,bench,spark]' "pyspark==$SPARK_VERSION"

if ! { command -v java && command -v mvn; } >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    # As root on Debian (CI machines): bring Java and Maven for the Kafka broker.
    apt-get update -qq && apt-get install -y -qq default-jre-headless maven >/dev/null
fi
if ! command -v kcat >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    # kcat: a Kafka producer nobody here wrote; the test of the kcat recipe in docs/api.md runs it.
    apt-get update -qq && apt-get install -y -qq kcat >/dev/null
fi
command -v kcat >/dev/null || echo "warning: kcat missing: the kcat recipe test will fail (apt-get install kcat)" >&2
if command -v java >/dev/null && command -v mvn >/dev/null; then
    deploy/kafka/kafka.sh fetch
    deploy/spark/fetch.sh
else
    echo "warning: java or mvn missing: the Kafka and Spark tests will fail (the quickstart needs neither)" >&2
fi

# The dashboard's browser test drives Debian's chromium with Playwright (no browser download).
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && apt-get install -y -qq chromium >/dev/null
fi
if [ ! -x /usr/bin/chromium ]; then
    echo "warning: /usr/bin/chromium missing: the dashboard's browser test will fail (apt-get install chromium)" >&2
fi

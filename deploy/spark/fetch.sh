#!/usr/bin/env bash
# Put the Spark jars pyspark lacks (spark-avro, the Kafka sink) in deploy/spark/lib, from
# Maven Central through pom.xml. Once; needs mvn. VENICE_SPARK_JARS overrides the folder.
#
#   fetch.sh            fetch unless the jars are there
#   fetch.sh version    print the Spark version pom.xml pins (what pyspark must be)
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
LIB=${VENICE_SPARK_JARS:-$HERE/lib}

die() { echo "fetch.sh: $*" >&2; exit 1; }

version() {
    sed -n 's:.*<spark.version>\(.*\)</spark.version>.*:\1:p' "$HERE/pom.xml"
}

fetch() {
    local v
    v=$(version)
    if compgen -G "$LIB/spark-avro_2.13-$v.jar" >/dev/null && compgen -G "$LIB/spark-sql-kafka-0-10_2.13-$v.jar" >/dev/null; then
        return 0
    fi
    command -v mvn >/dev/null || die "the Spark jars are not in $LIB and mvn is not installed"
    mkdir -p "$LIB"
    mvn -q -B -f "$HERE/pom.xml" dependency:copy-dependencies -DoutputDirectory="$LIB" -DincludeScope=runtime
    compgen -G "$LIB/spark-avro_2.13-$v.jar" >/dev/null || die "no spark-avro jar in $LIB after mvn"
}

case "${1:-fetch}" in
    fetch) fetch ;;
    version) version ;;
    *) echo "usage: fetch.sh [fetch | version]" >&2; exit 2 ;;
esac

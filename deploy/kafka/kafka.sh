#!/usr/bin/env bash
# A single-node Apache Kafka broker (KRaft, combined broker+controller) on 127.0.0.1,
# for tests and local use. The jars come from Maven Central through pom.xml.
#
#   kafka.sh fetch                                   jars into deploy/kafka/lib (once)
#   kafka.sh start --dir DIR --port P --controller-port C
#                                                    format DIR (first time) and start;
#                                                    prints the bootstrap address
#   kafka.sh stop --dir DIR                          stop the broker started in DIR (by pid)
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
LIB=${VENICE_KAFKA_LIB:-$HERE/lib}

fetch() {
    if compgen -G "$LIB/kafka_2.13-*.jar" >/dev/null; then
        return 0
    fi
    mkdir -p "$LIB"
    mvn -q -B -f "$HERE/pom.xml" dependency:copy-dependencies \
        -DoutputDirectory="$LIB" -DincludeScope=runtime
    compgen -G "$LIB/kafka_2.13-*.jar" >/dev/null || { echo "kafka jars missing after fetch" >&2; exit 1; }
}

parse() {
    DIR="" PORT="" CPORT=""
    while [ $# -gt 0 ]; do
        case "$1" in
            --dir) DIR=$2; shift 2 ;;
            --port) PORT=$2; shift 2 ;;
            --controller-port) CPORT=$2; shift 2 ;;
            *) echo "unknown option $1" >&2; exit 2 ;;
        esac
    done
    [ -n "$DIR" ] || { echo "--dir is required" >&2; exit 2; }
}

port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

start() {
    parse "$@"
    [ -n "$PORT" ] && [ -n "$CPORT" ] || { echo "--port and --controller-port are required" >&2; exit 2; }
    fetch
    mkdir -p "$DIR"
    DIR=$(cd "$DIR" && pwd)
    if [ -f "$DIR/broker.pid" ] && kill -0 "$(cat "$DIR/broker.pid")" 2>/dev/null; then
        echo "a broker is already running from $DIR (pid $(cat "$DIR/broker.pid"))" >&2
        exit 1
    fi
    cat > "$DIR/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CPORT
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CPORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs=$DIR/data
num.partitions=1
auto.create.topics.enable=false
delete.topic.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=2
log.flush.interval.messages=9223372036854775807
PROPS
    cat > "$DIR/log4j.properties" <<PROPS
log4j.rootLogger=WARN, file
log4j.appender.file=org.apache.log4j.FileAppender
log4j.appender.file.File=$DIR/broker.log
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.server.KafkaServer=INFO
log4j.logger.kafka.server.BrokerServer=INFO
PROPS
    JAVA_OPTS=(-Xms128m -Xmx512m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xshare:auto
               -Djava.awt.headless=true "-Dlog4j.configuration=file:$DIR/log4j.properties")
    if [ ! -f "$DIR/data/meta.properties" ]; then
        cluster_id=$(python3 -c 'import base64,uuid;print(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))')
        java "${JAVA_OPTS[@]}" -cp "$LIB/*" kafka.tools.StorageTool format \
            -t "$cluster_id" -c "$DIR/server.properties" --ignore-formatted >"$DIR/format.log" 2>&1 \
            || { cat "$DIR/format.log" >&2; exit 1; }
    fi
    nohup java "${JAVA_OPTS[@]}" -cp "$LIB/*" kafka.Kafka "$DIR/server.properties" \
        >>"$DIR/broker.out" 2>&1 </dev/null &
    echo $! > "$DIR/broker.pid"
    for _ in $(seq 1 600); do
        if ! kill -0 "$(cat "$DIR/broker.pid")" 2>/dev/null; then
            echo "broker exited during start-up:" >&2
            tail -n 30 "$DIR/broker.out" "$DIR/broker.log" >&2 2>/dev/null || true
            exit 1
        fi
        if port_open "$PORT"; then
            echo "127.0.0.1:$PORT"
            return 0
        fi
        sleep 0.1
    done
    echo "broker did not open port $PORT within 60 s" >&2
    tail -n 30 "$DIR/broker.out" "$DIR/broker.log" >&2 2>/dev/null || true
    stop_pid "$DIR"
    exit 1
}

stop_pid() {
    local dir=$1 pid
    [ -f "$dir/broker.pid" ] || return 0
    pid=$(cat "$dir/broker.pid")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 200); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$dir/broker.pid"
}

stop() {
    parse "$@"
    stop_pid "$DIR"
}

case "${1:-}" in
    fetch) fetch ;;
    start) shift; start "$@" ;;
    stop) shift; stop "$@" ;;
    *) echo "usage: kafka.sh fetch | start --dir DIR --port P --controller-port C | stop --dir DIR" >&2; exit 2 ;;
esac

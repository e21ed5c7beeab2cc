#!/usr/bin/env bash
# A single-node Apache Kafka broker (KRaft, combined broker+controller) on 127.0.0.1,
# for tests and local use. The jars come from Maven Central through pom.xml.
#
#   kafka.sh fetch                       put the jars in deploy/kafka/lib (once; needs mvn)
#   kafka.sh start --dir DIR --port P --controller-port C [--watch-pid PID]
#                                        format DIR (first time only, so a restart keeps
#                                        the data) and start the broker in the background;
#                                        prints the bootstrap address 127.0.0.1:P once the
#                                        port accepts connections. With --watch-pid the
#                                        broker is stopped when process PID goes away, so
#                                        a crashed test run leaves no broker behind.
#   kafka.sh stop --dir DIR              stop the broker started in DIR (by its pid)
#
# Environment: VENICE_KAFKA_LIB (jar directory), VENICE_KAFKA_JVM_OPTS (extra JVM flags,
# appended, so they win; e.g. "-XX:TieredStopAtLevel=4" for a long benchmark run).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
LIB=${VENICE_KAFKA_LIB:-$HERE/lib}
START_TIMEOUT_S=60
STOP_TIMEOUT_S=20

die() { echo "kafka.sh: $*" >&2; exit 1; }

fetch() {
    if compgen -G "$LIB/kafka_2.13-*.jar" >/dev/null; then
        return 0
    fi
    command -v mvn >/dev/null || die "the Kafka jars are not in $LIB and mvn is not installed"
    mkdir -p "$LIB"
    mvn -q -B -f "$HERE/pom.xml" dependency:copy-dependencies \
        -DoutputDirectory="$LIB" -DincludeScope=runtime
    compgen -G "$LIB/kafka_2.13-*.jar" >/dev/null || die "no kafka_2.13 jar in $LIB after mvn"
}

parse() {
    DIR="" PORT="" CPORT="" WATCH=""
    while [ $# -gt 0 ]; do
        [ $# -ge 2 ] || die "option $1 needs a value"
        case "$1" in
            --dir) DIR=$2 ;;
            --port) PORT=$2 ;;
            --controller-port) CPORT=$2 ;;
            --watch-pid) WATCH=$2 ;;
            *) die "unknown option $1" ;;
        esac
        shift 2
    done
    [ -n "$DIR" ] || die "--dir is required"
}

port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

alive() {  # a zombie (dead, not yet reaped) counts as gone
    local state
    kill -0 "$1" 2>/dev/null || return 1
    state=$(sed -E 's/.*\) (.).*/\1/' "/proc/$1/stat" 2>/dev/null) || return 0
    [ "$state" != Z ]
}

running_pid() {  # the pid in $1/broker.pid if it is alive and still our broker (not a reused pid)
    local pid
    [ -f "$1/broker.pid" ] || return 1
    pid=$(cat "$1/broker.pid")
    [ -n "$pid" ] && alive "$pid" || return 1
    if [ -r "/proc/$pid/cmdline" ]; then
        tr '\0' ' ' < "/proc/$pid/cmdline" | grep -qF "kafka.Kafka $1/server.properties" || return 1
    fi
    echo "$pid"
}

write_config() {
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
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=false
delete.topic.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
group.initial.rebalance.delay.ms=0
# Small and few threads: a 2-core test machine runs the broker beside the whole platform.
num.network.threads=2
num.io.threads=2
background.threads=2
num.recovery.threads.per.data.dir=1
num.replica.fetchers=1
log.cleaner.threads=1
log.cleaner.dedupe.buffer.size=8388608
auto.leader.rebalance.enable=false
# Records up to 8 MiB (the producer's max_request_size).
message.max.bytes=10485760
replica.fetch.max.bytes=10485760
PROPS
    cat > "$DIR/log4j.properties" <<PROPS
log4j.rootLogger=WARN, file
log4j.appender.file=org.apache.log4j.FileAppender
log4j.appender.file.File=$DIR/broker.log
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.server.BrokerServer=INFO
PROPS
}

jvm_opts() {
    # Serial GC and C1 only: the broker starts ~30% faster and stays small. Benchmarks
    # that want the broker's peak speed can append -XX:TieredStopAtLevel=4.
    JAVA_OPTS=(-Xms256m -Xmx512m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -XX:-UsePerfData
               -Djava.awt.headless=true "-Dlog4j.configuration=file:$DIR/log4j.properties")
    # shellcheck disable=SC2206  # word splitting of the extra flags is intended
    [ -z "${VENICE_KAFKA_JVM_OPTS:-}" ] || JAVA_OPTS+=(${VENICE_KAFKA_JVM_OPTS})
}

format_storage() {
    [ -f "$DIR/data/meta.properties" ] && return 0
    local cluster_id
    # A cluster id is 16 random bytes in URL-safe base64 without padding (22 characters).
    # One that starts with '-' would be read as an option by the storage tool (Kafka's own
    # Uuid.randomUuid() skips those too), so draw again until it does not.
    cluster_id=-
    while [ "${cluster_id#-}" != "$cluster_id" ]; do
        cluster_id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | cut -c1-22)
    done
    java "${JAVA_OPTS[@]}" -cp "$LIB/*" kafka.tools.StorageTool format \
        -t "$cluster_id" -c "$DIR/server.properties" --ignore-formatted >"$DIR/format.log" 2>&1 \
        || { cat "$DIR/format.log" >&2; die "formatting $DIR/data failed"; }
}

show_logs() {
    tail -n 40 "$DIR/broker.out" "$DIR/broker.log" >&2 2>/dev/null || true
}

watch_parent() {  # stop the broker once $WATCH is gone; ends by itself when the broker does
    local broker=$1
    (
        trap '' HUP
        while alive "$WATCH" && alive "$broker"; do sleep 1; done
        kill -TERM "$broker" 2>/dev/null || true
    ) </dev/null >/dev/null 2>&1 &
}

start() {
    parse "$@"
    [ -n "$PORT" ] && [ -n "$CPORT" ] || die "--port and --controller-port are required"
    fetch
    mkdir -p "$DIR"
    DIR=$(cd "$DIR" && pwd -P)
    if pid=$(running_pid "$DIR"); then
        die "a broker is already running from $DIR (pid $pid)"
    fi
    for port in "$PORT" "$CPORT"; do
        ! port_open "$port" || die "port $port is already in use"
    done
    write_config
    jvm_opts
    format_storage
    nohup java "${JAVA_OPTS[@]}" -cp "$LIB/*" kafka.Kafka "$DIR/server.properties" \
        >>"$DIR/broker.out" 2>&1 </dev/null &
    local broker=$!
    echo "$broker" > "$DIR/broker.pid"
    [ -z "$WATCH" ] || watch_parent "$broker"
    local deadline=$((SECONDS + START_TIMEOUT_S))
    while [ $SECONDS -lt $deadline ]; do
        if ! alive "$broker"; then
            echo "kafka.sh: the broker exited during start-up:" >&2
            show_logs
            rm -f "$DIR/broker.pid"
            exit 1
        fi
        if port_open "$PORT"; then
            echo "127.0.0.1:$PORT"
            return 0
        fi
        sleep 0.1
    done
    echo "kafka.sh: the broker did not open port $PORT within ${START_TIMEOUT_S}s:" >&2
    show_logs
    stop_dir
    exit 1
}

stop_dir() {
    local pid deadline
    if pid=$(running_pid "$DIR"); then
        kill -TERM "$pid" 2>/dev/null || true
        deadline=$((SECONDS + STOP_TIMEOUT_S))
        while alive "$pid" && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
        if alive "$pid"; then
            echo "kafka.sh: the broker (pid $pid) ignored TERM for ${STOP_TIMEOUT_S}s; killing it" >&2
            kill -KILL "$pid" 2>/dev/null || true
            deadline=$((SECONDS + 5))
            while alive "$pid" && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
        fi
    fi
    rm -f "$DIR/broker.pid"
}

stop() {
    parse "$@"
    [ -d "$DIR" ] || return 0
    DIR=$(cd "$DIR" && pwd -P)
    stop_dir
}

case "${1:-}" in
    fetch) fetch ;;
    start) shift; start "$@" ;;
    stop) shift; stop "$@" ;;
    *) echo "usage: kafka.sh fetch | start --dir DIR --port P --controller-port C [--watch-pid PID] | stop --dir DIR" >&2
       exit 2 ;;
esac

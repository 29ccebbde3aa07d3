# Apache Kafka in KRaft mode: one node that is both broker and controller, run with the
# machine's Java 17. Its jars come from Maven Central through tests/env/kafka/pom.xml
# (mvn dependency:copy-dependencies into $SB_CACHE/kafka-$KAFKA_VERSION/libs).
#
# Exports SWITCHBOARD_TEST_KAFKA_BROKERS=127.0.0.1:PORT (and, with the pod bridge up,
# SWITCHBOARD_TEST_POD_KAFKA_BROKERS=BRIDGE_IP:PORT, a second listener); creates the topics
# `notifications` and `notifications-dlq`.

KAFKA_HOME="$SB_CACHE/kafka-$KAFKA_VERSION"
KAFKA_TOPICS=(notifications notifications-dlq)

kafka_java() {
    if [ -n "${JAVA_HOME:-}" ] && [ -x "$JAVA_HOME/bin/java" ]; then echo "$JAVA_HOME/bin/java"; else command -v java; fi
}

kafka_install() {
    local java v
    java="$(kafka_java)" || { sb_log "kafka: no java on PATH (need Java 17+)"; return 1; }
    v="$("$java" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')"
    if [ "${v%%.*}" -lt 17 ] 2>/dev/null || [ -z "$v" ]; then
        sb_log "kafka: $java is Java ${v:-?}, need 17+"; return 1
    fi
    [ -f "$KAFKA_HOME/libs/.complete" ] && return 0
    command -v mvn >/dev/null || sb_apt maven || return 1
    rm -rf "$KAFKA_HOME/libs"
    mkdir -p "$KAFKA_HOME/libs"
    # Maven's own local repository under the cache too, so a fresh clone reuses it.
    mvn -B -q -Dstyle.color=never -f "$SB_ENV_DIR/kafka/pom.xml" \
        -Dmaven.repo.local="$SB_CACHE/maven-repo" \
        -Dkafka.version="$KAFKA_VERSION" -Dlog4j.version="$KAFKA_LOG4J_VERSION" \
        dependency:copy-dependencies -DoutputDirectory="$KAFKA_HOME/libs" \
        >>"$SB_LOGS/kafka.log" 2>&1 || return 1
    rm -rf "$SB_ENV_DIR/kafka/target"
    ls "$KAFKA_HOME/libs/kafka_2.13-$KAFKA_VERSION.jar" "$KAFKA_HOME/libs/kafka-tools-$KAFKA_VERSION.jar" \
        "$KAFKA_HOME/libs/log4j-core-$KAFKA_LOG4J_VERSION.jar" >/dev/null || return 1
    touch "$KAFKA_HOME/libs/.complete"
}

# kafka_run_class MAIN ARGS...: run a Kafka class with the cached jars (foreground).
kafka_run_class() {
    local main="$1"; shift
    "$(kafka_java)" -Xms64m -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
        -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$SB_STATE/kafka/log4j2-tools.properties" \
        -cp "$KAFKA_HOME/libs/*" "$main" "$@"
}

kafka_start() {
    local port cport pport dir="$SB_STATE/kafka" cluster_id t bridge listeners advertised
    port="$(sb_free_port)"
    cport="$(sb_free_port)"
    while [ "$cport" = "$port" ]; do cport="$(sb_free_port)"; done
    # A second listener on the pod bridge (components/bridge.sh), advertised there, for
    # the notification workers that run in pods on the real node.
    bridge="$(sb_bridge_ip)"
    listeners="PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport"
    advertised="PLAINTEXT://127.0.0.1:$port"
    if [ -n "$bridge" ]; then
        pport="$(sb_free_port)"
        while [ "$pport" = "$port" ] || [ "$pport" = "$cport" ]; do pport="$(sb_free_port)"; done
        listeners+=",PODS://$bridge:$pport"
        advertised+=",PODS://$bridge:$pport"
    fi
    rm -rf "$dir"
    mkdir -p "$dir/data"
    cat > "$dir/server.properties" <<CONF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=$listeners
advertised.listeners=$advertised
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,PODS:PLAINTEXT
log.dirs=$dir/data
num.partitions=1
default.replication.factor=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
min.insync.replicas=1
group.initial.rebalance.delay.ms=0
log.retention.hours=1
log.segment.bytes=16777216
num.network.threads=2
num.io.threads=2
CONF
    cat > "$dir/log4j2.properties" <<CONF
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = out
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.apache.name = org.apache.kafka
logger.apache.level = INFO
logger.request.name = kafka.request.logger
logger.request.level = WARN
CONF
    cat > "$dir/log4j2-tools.properties" <<CONF
status = warn
appender.err.type = Console
appender.err.name = err
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.err.ref = err
CONF
    cluster_id="$(python3 -c 'import base64,uuid; print(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))')"
    {
        echo "== format storage (cluster id $cluster_id)"
        kafka_run_class kafka.tools.StorageTool format -t "$cluster_id" -c "$dir/server.properties"
    } >>"$SB_LOGS/kafka.log" 2>&1 || { sb_log "kafka: storage format failed"; return 1; }

    sb_spawn kafka "$(kafka_java)" -Xms256m -Xmx512m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
        -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$dir/log4j2.properties" \
        -Dkafka.logs.dir="$dir" \
        -cp "$KAFKA_HOME/libs/*" kafka.Kafka "$dir/server.properties"
    # It really answers metadata and admin requests: create the topics the project uses
    # (one tool JVM per topic, side by side, started while the broker boots: their admin
    # clients wait for it).
    local pids=() pid failed=0
    for t in "${KAFKA_TOPICS[@]}"; do
        kafka_create_topic "127.0.0.1:$port" "$t" & pids+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
    [ "$failed" -eq 0 ] || return 1
    sb_wait_port "$port" 5 || { sb_log "kafka: broker does not listen on $port"; return 1; }
    sb_export SWITCHBOARD_TEST_KAFKA_BROKERS "127.0.0.1:$port"
    [ -n "$bridge" ] && sb_export SWITCHBOARD_TEST_POD_KAFKA_BROKERS "$bridge:$pport"
    return 0
}

# kafka_create_topic BOOTSTRAP TOPIC: create TOPIC (1 partition, RF 1), retrying while the
# broker is still coming up (30 tries).
kafka_create_topic() {
    local bootstrap="$1" topic="$2"
    for _ in $(seq 1 30); do
        sb_alive kafka || { sb_log "kafka exited"; return 1; }
        if kafka_run_class org.apache.kafka.tools.TopicCommand --bootstrap-server "$bootstrap" \
                --create --if-not-exists --topic "$topic" --partitions 1 --replication-factor 1 \
                >>"$SB_LOGS/kafka.log" 2>&1; then
            return 0
        fi
        sleep 1
    done
    sb_log "kafka: could not create topic $topic"
    return 1
}

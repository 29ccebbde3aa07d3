# Redis from Debian 12 (redis-server 7.0), run by hand, not as the system service:
# its own config and data dir under $SB_STATE/redis, no persistence; on loopback and,
# when the pod bridge is up, on the bridge address (for pods using an external Redis).
#
# Exports SWITCHBOARD_TEST_REDIS_URL=redis://127.0.0.1:PORT and, with the bridge,
# SWITCHBOARD_TEST_POD_REDIS_URL=redis://BRIDGE_IP:PORT.

redis_install() {
    sb_apt redis-server redis-tools || return 1
    local v
    v="$(redis-server --version | sed -n 's/.* v=\([0-9][0-9.]*\).*/\1/p')"
    if [ -z "$v" ] || [ "${v%%.*}" -lt "$REDIS_MIN_MAJOR" ]; then
        sb_log "redis-server ${v:-?} is too old: need >= $REDIS_MIN_MAJOR"
        return 1
    fi
}

redis_start() {
    local port dir="$SB_STATE/redis"
    port="$(sb_free_port)"
    rm -rf "$dir"
    mkdir -p "$dir"
    # Also on the pod bridge when it is up (components/bridge.sh): pods of the real node
    # use it as an external Redis.
    cat > "$dir/redis.conf" <<CONF
bind 127.0.0.1 $(sb_bridge_ip)
port $port
protected-mode no
daemonize no
supervised no
pidfile ""
logfile ""
dir $dir
save ""
appendonly no
databases 16
CONF
    sb_spawn redis redis-server "$dir/redis.conf"
    for _ in $(seq 1 200); do
        sb_alive redis || { sb_log "redis-server exited"; return 1; }
        if [ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" = "PONG" ]; then
            sb_export SWITCHBOARD_TEST_REDIS_URL "redis://127.0.0.1:$port"
            [ -n "$(sb_bridge_ip)" ] && sb_export SWITCHBOARD_TEST_POD_REDIS_URL "redis://$SB_BRIDGE_IP:$port"
            return 0
        fi
        sleep 0.1
    done
    sb_log "redis-server did not answer PING in 20s"
    return 1
}

# etcd, the Kubernetes API server's store. Built from the Go module proxy through the
# wrapper module tests/env/etcd/ (go.mod + go.sum pin ETCD_VERSION).
#
# Exports SWITCHBOARD_TEST_ETCD_URL (client URL, http on loopback).

ETCD_BIN="$SB_CACHE/etcd-$ETCD_VERSION/etcd"

etcd_install() {
    sb_apt curl || return 1
    grep -qE "^[[:space:]]*go\.etcd\.io/etcd/server/v3 $ETCD_VERSION( |\$)" "$SB_ENV_DIR/etcd/go.mod" ||
        { sb_log "tests/env/etcd/go.mod does not pin etcd $ETCD_VERSION (versions.env)"; return 1; }
    sb_go_build etcd "$ETCD_BIN" "$SB_ENV_DIR/etcd" go.etcd.io/etcd/server/v3 "-s -w"
}

etcd_start() {
    local client peer data="$SB_STATE/etcd/data" i
    client="$(sb_free_port)"
    peer="$(sb_free_port)"
    while [ "$peer" = "$client" ]; do peer="$(sb_free_port)"; done
    # A fresh store per run: the API server it backs is new too.
    rm -rf "$data"
    mkdir -p "$data"
    sb_spawn etcd "$ETCD_BIN" \
        --name switchboard-test \
        --data-dir "$data" \
        --listen-client-urls "http://127.0.0.1:$client" \
        --advertise-client-urls "http://127.0.0.1:$client" \
        --listen-peer-urls "http://127.0.0.1:$peer" \
        --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
        --initial-cluster "switchboard-test=http://127.0.0.1:$peer" \
        --initial-cluster-state new \
        --quota-backend-bytes $((2 * 1024 * 1024 * 1024)) \
        --unsafe-no-fsync \
        --log-level warn
    for i in $(seq 1 300); do
        sb_alive etcd || { sb_log "etcd exited"; return 1; }
        if curl -fsS --max-time 2 "http://127.0.0.1:$client/health" 2>/dev/null | grep -q '"health":"true"'; then
            sb_export SWITCHBOARD_TEST_ETCD_URL "http://127.0.0.1:$client"
            return 0
        fi
        sleep 0.1
    done
    sb_log "etcd did not report healthy in 30s"
    return 1
}

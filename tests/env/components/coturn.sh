# coturn from Debian 12, `turnserver` run by hand (not the service): TURN REST API
# authentication (use-auth-secret) with a current and a previous secret generated per
# run, plain UDP/TCP on one free loopback port, relaying on loopback only.
#
# Exports SWITCHBOARD_TEST_TURN_URL, SWITCHBOARD_TEST_STUN_URL, SWITCHBOARD_TEST_TURN_PORT,
# SWITCHBOARD_TEST_TURN_SECRET, SWITCHBOARD_TEST_TURN_PREVIOUS_SECRET, SWITCHBOARD_TEST_TURN_REALM.

COTURN_REALM="switchboard.test"

coturn_install() {
    sb_apt coturn
}

coturn_start() {
    local port dir="$SB_STATE/coturn" current previous
    # The port must be free for TCP and for UDP; sb_free_port checks TCP only.
    for _ in $(seq 1 20); do
        port="$(sb_free_port)"
        python3 -c "import socket,sys; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('127.0.0.1', int(sys.argv[1]))); s.close()" "$port" 2>/dev/null && break
    done
    current="$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')"
    previous="$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')"
    rm -rf "$dir"
    mkdir -p "$dir"
    cat > "$dir/turnserver.conf" <<CONF
listening-ip=127.0.0.1
listening-port=$port
relay-ip=127.0.0.1
# Relay ports above Linux's ephemeral range (32768-60999), where sb_free_port picks.
min-port=61000
max-port=65000
no-tls
no-dtls
no-rfc5780
no-cli
no-multicast-peers
allow-loopback-peers
fingerprint
use-auth-secret
static-auth-secret=$current
static-auth-secret=$previous
realm=$COTURN_REALM
userdb=$dir/turndb
pidfile=$dir/turnserver.pid
log-file=stdout
simple-log
CONF
    chmod 600 "$dir/turnserver.conf"
    sb_spawn coturn turnserver -c "$dir/turnserver.conf" --allow-loopback-peers
    sb_wait_port "$port" 20 || { sb_log "turnserver does not listen on $port"; return 1; }
    # It really answers STUN over UDP (a Binding request, no credentials needed).
    for _ in $(seq 1 50); do
        sb_alive coturn || { sb_log "turnserver exited"; return 1; }
        if timeout 5 turnutils_stunclient -p "$port" 127.0.0.1 2>&1 | grep -q "UDP reflexive addr"; then
            sb_export SWITCHBOARD_TEST_TURN_URL "turn:127.0.0.1:$port"
            sb_export SWITCHBOARD_TEST_STUN_URL "stun:127.0.0.1:$port"
            sb_export SWITCHBOARD_TEST_TURN_PORT "$port"
            sb_export SWITCHBOARD_TEST_TURN_SECRET "$current"
            sb_export SWITCHBOARD_TEST_TURN_PREVIOUS_SECRET "$previous"
            sb_export SWITCHBOARD_TEST_TURN_REALM "$COTURN_REALM"
            return 0
        fi
        sleep 0.2
    done
    sb_log "turnserver did not answer a STUN binding request"
    return 1
}

# The pod network of the real node (components/kubelet.sh): a Linux bridge that this
# environment creates, with the node's address on it, and the rules that keep everything
# on this machine. No process: `start` sets it up, `stop` takes it down again.
#
#   bridge  $SB_BRIDGE ($SB_BRIDGE_IP/24 of $SB_POD_CIDR); the CNI bridge plugin attaches
#           each pod's veth to it, pods live in network namespaces containerd creates.
#   route   $SB_SERVICE_CIDR -> the bridge, so a Service address that kube-proxy did not
#           translate goes to the bridge (where nothing answers), never to the default route.
#   nft     table `inet switchboard_env`: everything forwarded is dropped unless it enters
#           and leaves through the bridge (pod -> ClusterIP -> pod); nothing from the pods
#           is forwarded to another interface, nothing from elsewhere reaches them.
#   sysctl  net.ipv4.ip_forward=1 (needed for pod -> ClusterIP -> pod); the old value is
#           saved and put back by `stop`.
#
# Started first, so the API server can advertise the bridge address and the backing
# services (Redis, Kafka, FerretDB, SMTP) can listen on it for the pods.
#
# Exports SWITCHBOARD_TEST_BRIDGE_IP, SWITCHBOARD_TEST_POD_CIDR, SWITCHBOARD_TEST_SERVICE_CIDR.

SB_BRIDGE=cni0
SB_BRIDGE_IP=10.244.0.1
SB_POD_CIDR=10.244.0.0/24
SB_SERVICE_CIDR=10.96.0.0/16
SB_NFT_TABLE=switchboard_env

# sb_bridge_ip: the bridge address when the bridge is up, else nothing (components then
# listen on loopback only).
sb_bridge_ip() {
    ip -4 -o addr show dev "$SB_BRIDGE" 2>/dev/null | grep -q " $SB_BRIDGE_IP/" && echo "$SB_BRIDGE_IP"
    return 0
}

# sb_sysctl_save NAME...: remember each value once per run (the first `up` wins), so
# `sb_sysctl_restore` puts back what the machine had before this environment.
sb_sysctl_save() {
    local saved="$SB_STATE/sysctls.saved" k
    for k in "$@"; do
        grep -q "^$k=" "$saved" 2>/dev/null || echo "$k=$(sysctl -n "$k")" >> "$saved"
    done
}

sb_sysctl_restore() {
    local saved="$SB_STATE/sysctls.saved" line
    [ -f "$saved" ] || return 0
    while IFS= read -r line; do
        sysctl -q -w "$line" >/dev/null 2>&1 || sb_log "could not restore sysctl $line"
    done < "$saved"
    rm -f "$saved"
}

bridge_install() {
    sb_apt iproute2 nftables procps
}

bridge_start() {
    if ! ip link show "$SB_BRIDGE" >/dev/null 2>&1; then
        ip link add "$SB_BRIDGE" type bridge || return 1
    fi
    ip -4 addr show dev "$SB_BRIDGE" | grep -q " $SB_BRIDGE_IP/" ||
        ip addr add "$SB_BRIDGE_IP/24" dev "$SB_BRIDGE" || return 1
    ip link set "$SB_BRIDGE" up || return 1
    ip route replace "$SB_SERVICE_CIDR" dev "$SB_BRIDGE" || return 1
    nft -f - <<EOF || return 1
table inet $SB_NFT_TABLE
delete table inet $SB_NFT_TABLE
table inet $SB_NFT_TABLE {
    chain forward {
        type filter hook forward priority filter - 10; policy accept;
        iifname "$SB_BRIDGE" oifname "$SB_BRIDGE" accept
        counter drop
    }
}
EOF
    sb_sysctl_save net.ipv4.ip_forward
    sysctl -q -w net.ipv4.ip_forward=1 || return 1
    sb_export SWITCHBOARD_TEST_BRIDGE_IP "$SB_BRIDGE_IP"
    sb_export SWITCHBOARD_TEST_POD_CIDR "$SB_POD_CIDR"
    sb_export SWITCHBOARD_TEST_SERVICE_CIDR "$SB_SERVICE_CIDR"
}

bridge_stop() {
    nft delete table inet "$SB_NFT_TABLE" 2>/dev/null
    ip route del "$SB_SERVICE_CIDR" dev "$SB_BRIDGE" 2>/dev/null
    ip link del "$SB_BRIDGE" 2>/dev/null
    sb_sysctl_restore
    return 0
}

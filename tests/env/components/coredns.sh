# CoreDNS, the cluster DNS of the real node: it serves cluster.local (and the reverse
# zones) from the API server with its `kubernetes` plugin and nothing else: no `forward`,
# so no pod ever asks a resolver outside this machine (other names get NXDOMAIN/SERVFAIL).
# It runs on the host, on the bridge address, port 53; the kube-system/kube-dns Service at
# the kubelet's clusterDNS address has that address as its one endpoint (a selectorless
# Service with an EndpointSlice), so pods reach it through kube-proxy like any Service.
# Built from the Go module proxy through tests/env/coredns/.
#
# Exports SWITCHBOARD_TEST_CLUSTER_DNS (the Service address).

SB_COREDNS_BIN="$SB_CACHE/coredns-$COREDNS_VERSION-go-$SB_GO_TOOLS_KEY/coredns"

coredns_install() {
    grep -qE "^[[:space:]]*(require )?github\.com/coredns/coredns $COREDNS_VERSION( |\$)" "$SB_ENV_DIR/coredns/go.mod" ||
        { sb_log "tests/env/coredns/go.mod does not pin coredns $COREDNS_VERSION (versions.env)"; return 1; }
    sb_go_build coredns "$SB_COREDNS_BIN" "$SB_GO_TOOLS" github.com/coredns/coredns \
        "-s -w -X github.com/coredns/coredns/coremain.GitCommit=$COREDNS_VERSION"
}

coredns_start() {
    local d="$SB_STATE/coredns" kubectl="$SB_KUBE_BIN/kubectl" i
    sb_kube_load_env
    sb_alive kube_apiserver || { sb_log "coredns needs kube_apiserver"; return 1; }
    [ -n "$(sb_bridge_ip)" ] || { sb_log "coredns needs the pod bridge: envctl up bridge"; return 1; }
    mkdir -p "$d"
    sb_kube_kubeconfig "$d/kubeconfig" coredns
    # What CoreDNS' kubernetes plugin reads, for the user of its client certificate.
    "$kubectl" apply -f - >>"$SB_LOGS/coredns.log" 2>&1 <<YAML || return 1
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:coredns"}
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "system:coredns"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:coredns"}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: "system:coredns"}
---
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels: {k8s-app: kube-dns, kubernetes.io/name: CoreDNS}
spec:
  clusterIP: $SB_CLUSTER_DNS
  ports:
  - {name: dns, port: 53, protocol: UDP, targetPort: 53}
  - {name: dns-tcp, port: 53, protocol: TCP, targetPort: 53}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kube-dns-host
  namespace: kube-system
  labels: {kubernetes.io/service-name: kube-dns, endpointslice.kubernetes.io/managed-by: switchboard-tests}
addressType: IPv4
endpoints:
- addresses: ["$SB_BRIDGE_IP"]
  conditions: {ready: true}
ports:
- {name: dns, port: 53, protocol: UDP}
- {name: dns-tcp, port: 53, protocol: TCP}
YAML
    cat > "$d/Corefile" <<CONF
.:53 {
    bind $SB_BRIDGE_IP
    errors
    health 127.0.0.1:$(sb_free_port)
    ready 127.0.0.1:$(sb_free_port)
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $d/kubeconfig switchboard-test
        pods insecure
        ttl 5
    }
    cache 5
}
CONF
    sed -i "s/switchboard-test\$/coredns@switchboard-test/" "$d/Corefile"
    sb_spawn coredns "$SB_COREDNS_BIN" -conf "$d/Corefile"
    local ready
    ready="$(sed -n 's/^ *ready \(.*\)$/\1/p' "$d/Corefile")"
    for i in $(seq 1 300); do
        sb_alive coredns || { sb_log "coredns exited"; return 1; }
        curl -fsS --max-time 2 "http://$ready/ready" >/dev/null 2>&1 && break
        sleep 0.2
    done
    curl -fsS --max-time 2 "http://$ready/ready" >/dev/null 2>&1 || { sb_log "coredns not ready in 60s"; return 1; }
    sb_export SWITCHBOARD_TEST_CLUSTER_DNS "$SB_CLUSTER_DNS"
}

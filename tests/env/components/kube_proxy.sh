# kube-proxy of the real node, nftables mode (Debian nftables), built from tests/env/kube/.
# Service addresses (ClusterIP, NodePort on the bridge address) reach the pods from the
# host and from other pods. masqueradeAll: a pod that reaches another pod on the same
# bridge through a ClusterIP gets the reply back through the host, where the translation
# is undone. Conntrack sysctls are left as they are (0 = do not set).
#
# Exports nothing; `down` removes its nftables tables (`ip kube-proxy`, `ip6 kube-proxy`).

kube_proxy_install() {
    sb_apt nftables conntrack || return 1
    sb_kube_build kube_proxy kube-proxy
}

kube_proxy_start() {
    local d="$SB_STATE/kube-proxy" healthz metrics i
    sb_kube_load_env
    sb_alive kubelet || { sb_log "kube_proxy needs the real node: envctl up kubelet kube_proxy"; return 1; }
    mkdir -p "$d"
    sb_kube_kubeconfig "$d/kubeconfig" kube-proxy
    healthz="$(sb_free_port)"
    metrics="$(sb_free_port)"
    cat > "$d/config.yaml" <<CONF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: nftables
hostnameOverride: $SB_NODE_NAME
clientConnection:
  kubeconfig: $d/kubeconfig
clusterCIDR: $SB_POD_CIDR
bindAddress: $SB_BRIDGE_IP
healthzBindAddress: 127.0.0.1:$healthz
metricsBindAddress: 127.0.0.1:$metrics
nodePortAddresses: ["$SB_BRIDGE_IP/32"]
nftables:
  masqueradeAll: true
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
  udpTimeout: 0s
  udpStreamTimeout: 0s
CONF
    sb_spawn kube_proxy "$SB_KUBE_BIN/kube-proxy" --config="$d/config.yaml" --v=1
    for i in $(seq 1 300); do
        sb_alive kube_proxy || { sb_log "kube-proxy exited"; return 1; }
        curl -fsS --max-time 2 "http://127.0.0.1:$healthz/healthz" >/dev/null 2>&1 &&
            nft list table ip kube-proxy >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    sb_log "kube-proxy did not become healthy in 60s"
    return 1
}

kube_proxy_stop() {
    sb_stop kube_proxy
    nft delete table ip kube-proxy 2>/dev/null
    nft delete table ip6 kube-proxy 2>/dev/null
    return 0
}

# kwok plays the kubelet for fake nodes: nodes annotated kwok.x-k8s.io/node=fake become
# Ready and stay so (heartbeat), pods the scheduler binds to them become Running and Ready,
# and deleted pods go away. Nothing runs in those pods: their IPs (kwok's --cidr) are mere
# values, never dial them. The kubelet endpoint of the nodes is kwok's own server on
# loopback, so whatever the API server asks of a "kubelet" stays on this machine.
# Built from the Go module proxy through tests/env/kwok/; the stages are kwok's own
# defaults (the ones kwokctl uses), taken from the pinned module's kustomize/stage/.
#
# Exports SWITCHBOARD_TEST_KWOK_NODES (space-separated names of the fake nodes).

SB_KWOK_DIR="$SB_CACHE/kwok-$KWOK_VERSION-go-$SB_GO_TOOLS_KEY"
SB_KWOK_NODES="kwok-node-0 kwok-node-1"

kwok_install() {
    local mod stage
    grep -qE "^[[:space:]]*sigs\.k8s\.io/kwok $KWOK_VERSION( |\$)" "$SB_ENV_DIR/kwok/go.mod" ||
        { sb_log "tests/env/kwok/go.mod does not pin kwok $KWOK_VERSION (versions.env)"; return 1; }
    sb_go_build kwok "$SB_KWOK_DIR/kwok" "$SB_GO_TOOLS" sigs.k8s.io/kwok/cmd/kwok "-s -w" ||
        return 1
    [ -s "$SB_KWOK_DIR/stages.yaml" ] && return 0
    mod="$(sb_go_mod_dir "$SB_GO_TOOLS" sigs.k8s.io/kwok)" || return 1
    for stage in node/fast/node-initialize node/heartbeat/node-heartbeat \
        pod/fast/pod-ready pod/fast/pod-complete pod/fast/pod-delete; do
        [ -f "$mod/kustomize/stage/$stage.yaml" ] || { sb_log "kwok $KWOK_VERSION has no stage $stage"; return 1; }
        printf -- '---\n'
        cat "$mod/kustomize/stage/$stage.yaml"
    done > "$SB_KWOK_DIR/stages.yaml.tmp" && mv "$SB_KWOK_DIR/stages.yaml.tmp" "$SB_KWOK_DIR/stages.yaml"
}

kwok_start() {
    local port kubeconfig="$SB_KUBE_DIR/kwok.kubeconfig" kubectl="$SB_KUBE_BIN/kubectl" node i
    sb_kube_load_env
    sb_alive kube_apiserver || { sb_log "kwok needs kube_apiserver"; return 1; }
    sb_kube_kubeconfig "$kubeconfig" kwok
    port="$(sb_free_port)"
    sb_spawn kwok "$SB_KWOK_DIR/kwok" \
        --config="$SB_KWOK_DIR/stages.yaml" \
        --kubeconfig="$kubeconfig" \
        --manage-all-nodes=false \
        --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
        --server-address="127.0.0.1:$port" \
        --node-ip=127.0.0.1 \
        --node-port="$port" \
        --tls-cert-file="$SB_KUBE_PKI/apiserver.crt" \
        --tls-private-key-file="$SB_KUBE_PKI/apiserver.key"
    for i in $(seq 1 300); do
        sb_alive kwok || { sb_log "kwok exited"; return 1; }
        [ "$(curl -sS --max-time 2 "http://127.0.0.1:$port/healthz" 2>/dev/null)" = ok ] && break
        sleep 0.2
    done
    for node in $SB_KWOK_NODES; do
        "$kubectl" --kubeconfig="$kubeconfig" apply -f - >>"$SB_LOGS/kwok.log" 2>&1 <<EOF || return 1
apiVersion: v1
kind: Node
metadata:
  name: $node
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    type: kwok
    kubernetes.io/hostname: $node
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    node-role.kubernetes.io/agent: ""
EOF
    done
    # The node-initialize stage marks them Ready (with generous capacity) within a second.
    for node in $SB_KWOK_NODES; do
        "$kubectl" --kubeconfig="$kubeconfig" wait --for=condition=Ready --timeout=60s "node/$node" \
            >>"$SB_LOGS/kwok.log" 2>&1 || { sb_log "node $node did not become Ready"; return 1; }
    done
    sb_export SWITCHBOARD_TEST_KWOK_NODES "$SB_KWOK_NODES"
}

# kube-controller-manager (garbage collector, Deployments, ReplicaSets, StatefulSets,
# service accounts and their tokens, ...) as system:kube-controller-manager, and with it
# kube-scheduler (components/kube_scheduler.sh): without a scheduler no pod of a Deployment
# or StatefulSet ever gets a node. Both come from the wrapper module tests/env/kube/.
#
# Starting this component also starts kube_scheduler when it is not running yet, so
# `envctl up etcd kube_apiserver kube_controller_manager kwok` is a whole control plane.

kube_controller_manager_install() {
    sb_kube_build kube_controller_manager kube-controller-manager || return 1
    kube_scheduler_install
}

kube_controller_manager_start() {
    local port kubeconfig="$SB_KUBE_DIR/controller-manager.kubeconfig"
    sb_kube_load_env
    sb_alive kube_apiserver || { sb_log "kube_controller_manager needs kube_apiserver"; return 1; }
    sb_kube_kubeconfig "$kubeconfig" controller-manager
    port="$(sb_free_port)"
    mkdir -p "$SB_KUBE_DIR/controller-manager"
    sb_spawn kube_controller_manager "$SB_KUBE_BIN/kube-controller-manager" \
        --kubeconfig="$kubeconfig" \
        --authentication-kubeconfig="$kubeconfig" \
        --authorization-kubeconfig="$kubeconfig" \
        --bind-address=127.0.0.1 \
        --secure-port="$port" \
        --cert-dir="$SB_KUBE_DIR/controller-manager" \
        --leader-elect=false \
        --use-service-account-credentials=true \
        --service-account-private-key-file="$SB_KUBE_PKI/sa.key" \
        --root-ca-file="$SB_KUBE_PKI/ca.crt" \
        --cluster-signing-cert-file="$SB_KUBE_PKI/ca.crt" \
        --cluster-signing-key-file="$SB_KUBE_PKI/ca.key" \
        --service-cluster-ip-range=10.96.0.0/16 \
        --controllers='*' \
        --profiling=false \
        --v=0
    sb_kube_wait_healthz kube_controller_manager "$port" healthz 120 || return 1
    if ! sb_alive kube_scheduler; then
        kube_scheduler_start || return 1
        grep -qx kube_scheduler "$SB_STATE/started" 2>/dev/null || echo kube_scheduler >> "$SB_STATE/started"
    fi
}

kube_controller_manager_stop() {
    sb_stop kube_scheduler
}

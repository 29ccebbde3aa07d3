# kube-scheduler as system:kube-scheduler, from the wrapper module tests/env/kube/.
# kube_controller_manager starts it too, so it is rarely named on its own.

kube_scheduler_install() {
    sb_kube_build kube_scheduler kube-scheduler
}

kube_scheduler_start() {
    local port kubeconfig="$SB_KUBE_DIR/scheduler.kubeconfig"
    sb_kube_load_env
    sb_alive kube_apiserver || { sb_log "kube_scheduler needs kube_apiserver"; return 1; }
    sb_kube_kubeconfig "$kubeconfig" scheduler
    port="$(sb_free_port)"
    mkdir -p "$SB_KUBE_DIR/scheduler"
    sb_spawn kube_scheduler "$SB_KUBE_BIN/kube-scheduler" \
        --kubeconfig="$kubeconfig" \
        --authentication-kubeconfig="$kubeconfig" \
        --authorization-kubeconfig="$kubeconfig" \
        --bind-address=127.0.0.1 \
        --secure-port="$port" \
        --cert-dir="$SB_KUBE_DIR/scheduler" \
        --leader-elect=false \
        --profiling=false \
        --v=0
    sb_kube_wait_healthz kube_scheduler "$port" healthz 120
}

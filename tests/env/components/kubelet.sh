# The real node: kubelet v$KUBERNETES_VERSION (built from tests/env/kube/ like the control
# plane) on this environment's containerd (components/containerd.sh), registered as
# $SB_NODE_NAME with the bridge address as its InternalIP. Pods that must really run are
# pinned to it: label switchboard.dev/node=real, and a taint (switchboard.dev/real-node,
# NoSchedule) that only they tolerate, so the many pods of other tests, whose images do
# not exist, stay on kwok's fake nodes.
#
# What this machine needs of a kubelet (see tests/env/README.md):
#   cgroup v1 only         failCgroupV1: false, cgroupDriver: cgroupfs
#   no pod resolver        resolvConf: "" (pods get only the cluster DNS, components/coredns.sh)
#   kubectl logs/exec      serving certificate for the node IP, webhook authn/authz, the
#                          API server dials the InternalIP (components/kube_apiserver.sh)
#   sysctls                kubelet rewrites vm.overcommit_memory, kernel.panic and
#                          kernel.panic_on_oops; fs.inotify.max_user_instances (128) is too
#                          low. All are saved first and restored by `down`.
#   mounts                 kubelet bind-mounts its root dir onto itself and mounts pod
#                          volumes below it: `down` unmounts everything there.
#   disk                   root dir under $SB_STATE; eviction thresholds low (the disk is
#                          shared with everything else; no eviction mid-test).
#
# Exports SWITCHBOARD_TEST_NODE_NAME.

SB_NODE_NAME=switchboard-node
SB_KUBELET_DIR="$SB_STATE/kubelet"
SB_CLUSTER_DNS=10.96.0.10

kubelet_install() {
    sb_apt conntrack ethtool socat util-linux mount || return 1
    sb_kube_build kubelet kubelet
}

kubelet_start() {
    local d="$SB_KUBELET_DIR" port healthz i
    sb_kube_load_env
    sb_alive kube_apiserver || { sb_log "kubelet needs kube_apiserver"; return 1; }
    sb_alive containerd || { sb_log "kubelet needs containerd: envctl up containerd kubelet"; return 1; }
    [ "${SWITCHBOARD_TEST_KUBE_API:-}" = "${SWITCHBOARD_TEST_KUBE_API#https://127.0.0.1}" ] ||
        { sb_log "kubelet: the API server was started before the pod bridge; restart it (envctl down; envctl up)"; return 1; }
    sb_sysctl_save vm.overcommit_memory kernel.panic kernel.panic_on_oops fs.inotify.max_user_instances fs.inotify.max_user_watches
    sysctl -q -w fs.inotify.max_user_instances=8192 fs.inotify.max_user_watches=524288 >/dev/null || return 1
    mkdir -p "$d/root" "$d/pki"
    cp "$SB_KUBE_PKI/kubelet-serving.crt" "$SB_KUBE_PKI/kubelet-serving.key" "$d/pki/"
    sb_kube_kubeconfig "$d/kubeconfig" node
    port="$(sb_free_port)"
    healthz="$(sb_free_port)"
    cat > "$d/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $SB_BRIDGE_IP
port: $port
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $healthz
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $SB_KUBE_PKI/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $d/pki/kubelet-serving.crt
tlsPrivateKeyFile: $d/pki/kubelet-serving.key
containerRuntimeEndpoint: unix://$SB_CTRD_SOCK
imageServiceEndpoint: unix://$SB_CTRD_SOCK
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
clusterDomain: cluster.local
clusterDNS: [$SB_CLUSTER_DNS]
resolvConf: ""
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
maxPods: 110
podPidsLimit: 4096
nodeStatusUpdateFrequency: 5s
shutdownGracePeriod: 0s
registerWithTaints:
- {key: switchboard.dev/real-node, value: "true", effect: NoSchedule}
EOF
    # The kubelet adds its chains (KUBE-KUBELET-CANARY, KUBE-IPTABLES-HINT, KUBE-FIREWALL)
    # through iptables-nft, creating the ip/ip6 filter, nat and mangle tables if needed:
    # remember which existed, so `down` removes only what it made.
    [ -f "$d/tables.before" ] || nft list tables > "$d/tables.before" 2>/dev/null || true
    sb_spawn kubelet "$SB_KUBE_BIN/kubelet" \
        --config="$d/config.yaml" \
        --kubeconfig="$d/kubeconfig" \
        --root-dir="$d/root" \
        --cert-dir="$d/pki" \
        --hostname-override="$SB_NODE_NAME" \
        --node-ip="$SB_BRIDGE_IP" \
        --node-labels=switchboard.dev/node=real \
        --v=1
    for i in $(seq 1 600); do
        sb_alive kubelet || { sb_log "kubelet exited"; return 1; }
        [ "$("$SB_KUBE_BIN/kubectl" get node "$SB_NODE_NAME" \
            -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ] && break
        sleep 0.2
    done
    [ "$("$SB_KUBE_BIN/kubectl" get node "$SB_NODE_NAME" \
        -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ] ||
        { sb_log "node $SB_NODE_NAME did not become Ready in 120s"; return 1; }
    sb_export SWITCHBOARD_TEST_NODE_NAME "$SB_NODE_NAME"
}

# kubelet_stop: stop the kubelet first (so it restarts nothing), then every pod sandbox
# through the CRI (containers, network namespaces, CNI addresses), then its mounts.
kubelet_stop() {
    sb_stop kubelet
    sb_alive containerd && sb_cri_remove_all
    [ -d "$SB_KUBELET_DIR" ] && sb_umount_under "$SB_KUBELET_DIR"
    # The cgroups kubelet made for pods (cgroupfs driver): empty once the pods are gone.
    local h
    for h in /sys/fs/cgroup/*/kubepods; do
        [ -d "$h" ] && find "$h" -depth -type d -exec rmdir {} \; 2>/dev/null
    done
    sb_kubelet_nft_cleanup
    return 0
}

# sb_kubelet_nft_cleanup: remove the kubelet's KUBE-* chains (and the rules jumping to
# them) from the ip/ip6 filter, nat and mangle tables, then each of those tables that is
# left without a rule and did not exist before the kubelet started (tables.before; without
# that record, any such empty table, as only the kubelet makes them here).
sb_kubelet_nft_cleanup() {
    command -v nft >/dev/null || return 0
    nft -j list ruleset 2>/dev/null | python3 -c '
import json, subprocess, sys
before = set()
try:
    with open(sys.argv[1]) as f:
        before = {tuple(l.split()[1:3]) for l in f if l.startswith("table ")}
except OSError:
    pass
items = json.load(sys.stdin).get("nftables", [])
ours = {(f, t) for f in ("ip", "ip6") for t in ("filter", "nat", "mangle")}
def nft(*args):
    subprocess.run(["nft", *args], stderr=subprocess.DEVNULL)
rules = {}
for i in items:
    r = i.get("rule")
    if r and (r["family"], r["table"]) in ours:
        rules.setdefault((r["family"], r["table"]), []).append(r)
for key, rs in rules.items():
    for r in rs:
        jumps = [e for e in r["expr"] if "jump" in e or "goto" in e]
        if any(next(iter(e.values()))["target"].startswith("KUBE-") for e in jumps) or r["chain"].startswith("KUBE-"):
            nft("delete", "rule", r["family"], r["table"], r["chain"], "handle", str(r["handle"]))
for i in items:
    c = i.get("chain")
    if c and (c["family"], c["table"]) in ours and c["name"].startswith("KUBE-"):
        nft("delete", "chain", c["family"], c["table"], c["name"])
left = json.loads(subprocess.run(["nft", "-j", "list", "ruleset"], capture_output=True, text=True).stdout or "{}")
busy = {(i["rule"]["family"], i["rule"]["table"]) for i in left.get("nftables", []) if "rule" in i}
for i in left.get("nftables", []):
    t = i.get("table")
    if t and (t["family"], t["name"]) in ours and (t["family"], t["name"]) not in before \
            and (t["family"], t["name"]) not in busy:
        nft("delete", "table", t["family"], t["name"])
' "$SB_KUBELET_DIR/tables.before"
    rm -f "$SB_KUBELET_DIR/tables.before"
    return 0
}

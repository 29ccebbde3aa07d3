# containerd, the container runtime of the real node (components/kubelet.sh), with runc,
# the CNI plugins and crictl. All built from the Go module proxy through the wrapper
# modules tests/env/{containerd,runc,cni,crictl}/:
#   containerd, containerd-shim-runc-v2, ctr   CGO_ENABLED=0, no btrfs/devmapper/zfs
#   runc                                       cgo + Debian libseccomp (seccomp profiles)
#   bridge, host-local, loopback               the pod network on $SB_BRIDGE
#   crictl                                     CRI client (tests kill containers with it;
#                                              `down` stops and removes every pod sandbox)
# Debian's containerd 1.6 is too old for kubelet 1.37; under containerd 2.4 Debian's
# runc 1.1.5 fails ("can't get final child's PID from pipe: EOF") and crun 1.8.1 too.
#
# Everything lives under $SB_STATE/containerd (root, state, socket, runc's state, CNI
# config and IPAM data, network namespaces), never under /var/lib or /run/containerd, so `down` can take
# it all away. The machine has no CAP_SYS_RESOURCE: restrict_oom_score_adj keeps runc
# from raising oom_score_adj (else every sandbox fails in runc init).
#
# Exports CONTAINERD_ADDRESS (the socket), SWITCHBOARD_TEST_CTR and SWITCHBOARD_TEST_CRICTL
# (paths of ctr and crictl), SWITCHBOARD_TEST_CRI_ENDPOINT (unix://… for crictl/kubelet),
# and crictl's CONTAINER_RUNTIME_ENDPOINT and IMAGE_SERVICE_ENDPOINT.

SB_NODE_BIN="$SB_CACHE/node-containerd-$CONTAINERD_VERSION-runc-$RUNC_VERSION-cni-$CNI_PLUGINS_VERSION-crictl-$CRICTL_VERSION-go-$SB_GO_TOOLS_KEY"
SB_CTRD_DIR="$SB_STATE/containerd"
SB_CTRD_SOCK="$SB_CTRD_DIR/containerd.sock"

# sb_ctr ARGS...: ctr against this environment's containerd, Kubernetes' namespace.
sb_ctr() { "$SB_NODE_BIN/ctr" --address "$SB_CTRD_SOCK" --namespace k8s.io "$@"; }
# sb_crictl ARGS...: crictl against this environment's containerd.
sb_crictl() { "$SB_NODE_BIN/crictl" --runtime-endpoint "unix://$SB_CTRD_SOCK" --image-endpoint "unix://$SB_CTRD_SOCK" --timeout 30s "$@"; }

containerd_install() {
    sb_apt libseccomp-dev pkg-config iproute2 || return 1
    local pin mod
    for pin in "containerd github.com/containerd/containerd/v2 $CONTAINERD_VERSION" \
        "runc github.com/opencontainers/runc $RUNC_VERSION" \
        "cni github.com/containernetworking/plugins $CNI_PLUGINS_VERSION" \
        "crictl sigs.k8s.io/cri-tools $CRICTL_VERSION"; do
        set -- $pin
        grep -qE "^[[:space:]]*(require )?${2//./\\.} $3( |\$)" "$SB_ENV_DIR/$1/go.mod" ||
            { sb_log "tests/env/$1/go.mod does not pin $2 $3 (versions.env)"; return 1; }
    done
    mod=github.com/containerd/containerd/v2
    local ld="-s -w -X $mod/version.Version=$CONTAINERD_VERSION -X $mod/version.Revision=go-module-proxy"
    local tags="no_btrfs,no_devmapper,no_zfs"
    for pin in containerd containerd-shim-runc-v2 ctr; do
        sb_go_build containerd "$SB_NODE_BIN/$pin" "$SB_GO_TOOLS" "$mod/cmd/$pin" "$ld" "$tags" || return 1
    done
    CGO_ENABLED=1 sb_go_build containerd "$SB_NODE_BIN/runc" "$SB_ENV_DIR/runc" github.com/opencontainers/runc \
        "-s -w -X main.gitCommit=go-module-proxy" "seccomp urfave_cli_no_docs" || return 1
    for pin in main/bridge ipam/host-local main/loopback; do
        sb_go_build containerd "$SB_NODE_BIN/cni/${pin#*/}" "$SB_ENV_DIR/cni" \
            "github.com/containernetworking/plugins/plugins/$pin" \
            "-s -w -X github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion=$CNI_PLUGINS_VERSION" || return 1
    done
    sb_go_build containerd "$SB_NODE_BIN/crictl" "$SB_GO_TOOLS" sigs.k8s.io/cri-tools/cmd/crictl \
        "-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=$CRICTL_VERSION"
}

containerd_start() {
    local d="$SB_CTRD_DIR"
    [ -n "$(sb_bridge_ip)" ] || { sb_log "containerd needs the pod bridge: envctl up bridge"; return 1; }
    mkdir -p "$d/root" "$d/state" "$d/cni/net.d" "$d/cni/ipam" "$d/opt" "$d/registry/_default"
    # No pull ever leaves this machine: every registry is "served" by a closed loopback
    # port (images come from images/build, imported by components/images.sh), so a pull
    # of anything else fails at once with ErrImagePull, never asking an outside resolver.
    cat > "$d/registry/_default/hosts.toml" <<EOF
server = "http://127.0.0.1:9"

[host."http://127.0.0.1:9"]
  capabilities = ["pull", "resolve"]
EOF
    # One bridge network for every pod; no masquerading (nothing leaves the machine).
    cat > "$d/cni/net.d/10-switchboard.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "switchboard",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$SB_BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$d/cni/ipam",
        "ranges": [[{"subnet": "$SB_POD_CIDR", "rangeStart": "${SB_POD_CIDR%.0/24}.10", "gateway": "$SB_BRIDGE_IP"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    }
  ]
}
EOF
    cat > "$d/config.toml" <<EOF
version = 3
root = "$d/root"
state = "$d/state"
disabled_plugins = ["io.containerd.nri.v1.nri", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "$SB_CTRD_SOCK"

[ttrpc]
  address = "$SB_CTRD_SOCK.ttrpc"

[plugins.'io.containerd.internal.v1.opt']
  path = "$d/opt"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.registry]
    config_path = "$d/registry"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "$PAUSE_IMAGE"

[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_cdi = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["$SB_NODE_BIN/cni"]
    conf_dir = "$d/cni/net.d"
    max_conf_num = 1
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "$SB_NODE_BIN/runc"
        Root = "$d/runc"
        SystemdCgroup = false

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
EOF
    # The shim finds runc through BinaryName; containerd finds the shim on PATH.
    PATH="$SB_NODE_BIN:$PATH" sb_spawn containerd "$SB_NODE_BIN/containerd" --config "$d/config.toml"
    local i
    for i in $(seq 1 300); do
        sb_alive containerd || { sb_log "containerd exited"; return 1; }
        sb_ctr version >/dev/null 2>&1 && sb_crictl info >/dev/null 2>&1 && break
        sleep 0.1
    done
    sb_crictl info >/dev/null 2>&1 || { sb_log "containerd's CRI did not answer in 30s"; return 1; }
    sb_export CONTAINERD_ADDRESS "$SB_CTRD_SOCK"
    sb_export SWITCHBOARD_TEST_CTR "$SB_NODE_BIN/ctr"
    sb_export SWITCHBOARD_TEST_CRICTL "$SB_NODE_BIN/crictl"
    sb_export SWITCHBOARD_TEST_CRI_ENDPOINT "unix://$SB_CTRD_SOCK"
    # crictl's own variables, so a bare `crictl` (and the tests' ones) talk to this runtime.
    sb_export CONTAINER_RUNTIME_ENDPOINT "unix://$SB_CTRD_SOCK"
    sb_export IMAGE_SERVICE_ENDPOINT "unix://$SB_CTRD_SOCK"
}

# containerd_stop: stop and remove every pod sandbox through the CRI (their network
# namespaces and CNI addresses go with them), stop containerd, then end the shims of
# this containerd (found by its socket on their command line) and unmount what is left.
containerd_stop() {
    local pid
    sb_alive containerd && sb_cri_remove_all
    sb_stop containerd
    for pid in $(pgrep -f "containerd-shim-runc-v2 .*-address $SB_CTRD_SOCK" 2>/dev/null); do
        kill -KILL "$pid" 2>/dev/null
    done
    # Container processes whose shim was killed: the ones in this runc's state.
    for pid in $(sb_runc_pids); do kill -KILL "$pid" 2>/dev/null; done
    sb_umount_under "$SB_CTRD_DIR"
    return 0
}

# sb_cri_remove_all: stop and remove every pod sandbox (and so every container).
sb_cri_remove_all() {
    local pods
    pods="$(sb_crictl pods -q 2>/dev/null)"
    [ -n "$pods" ] || return 0
    # shellcheck disable=SC2086
    sb_crictl stopp $pods >/dev/null 2>&1
    sb_crictl rmp -a -f >/dev/null 2>&1
    return 0
}

# sb_runc_pids: init PIDs of containers that this environment's runc still knows about.
sb_runc_pids() {
    [ -d "$SB_CTRD_DIR/runc" ] || return 0
    find "$SB_CTRD_DIR/runc" -maxdepth 3 -name state.json 2>/dev/null | while read -r f; do
        python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("init_process_pid",""))' "$f" 2>/dev/null
    done
}

# sb_umount_under DIR: unmount every mount point at or below DIR, deepest first.
sb_umount_under() {
    local dir mp
    dir="$(realpath -m "$1")"
    awk '{print $5}' /proc/self/mountinfo | grep -E "^$dir(/|\$)" | sort -r | while read -r mp; do
        umount "$mp" 2>/dev/null || umount -l "$mp" 2>/dev/null
    done
}

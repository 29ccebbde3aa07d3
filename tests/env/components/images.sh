# The project's container images on the real node: `images/build` (umoci, offline) builds
# them from the release binaries (built here with cargo) and Debian's packages, then they
# are imported into this environment's containerd under their published names, so pods
# with the chart's and the CRD's default images start with no registry. No process.
#
#   ghcr.io/switchboard-dev/{switchboard,switchboard-operator,redis,coturn,probe}:APPVERSION
#   $PAUSE_IMAGE (the sandbox image containerd pins; never pulled)
#
# Exports SWITCHBOARD_TEST_IMAGES (the OCI layouts and tarballs: target/images),
# SWITCHBOARD_TEST_IMAGE_TAG (the chart's appVersion) and SWITCHBOARD_TEST_IMAGE_REGISTRY.

SB_IMAGES_OUT="$SB_REPO/target/images"
SB_IMAGE_REGISTRY=ghcr.io/switchboard-dev

images_install() {
    sb_log "images: cargo build --release (switchboard, switchboard-operator, and switchboard-bench so that the benchmarks reuse this build)"
    (cd "$SB_REPO" && cargo build --release -p switchboard-dataplane -p switchboard-operator -p switchboard-bench) \
        >>"$SB_LOGS/images.log" 2>&1 || return 1
    "$SB_REPO/images/build" --out "$SB_IMAGES_OUT" >>"$SB_LOGS/images.log" 2>&1
}

images_start() {
    local tag name
    sb_alive containerd || { sb_log "images needs containerd: envctl up containerd images"; return 1; }
    tag="$(sb_app_version)"
    sb_ctr images import --base-name "${PAUSE_IMAGE%:*}" "$SB_IMAGES_OUT/pause.tar" \
        >>"$SB_LOGS/images.log" 2>&1 || return 1
    for name in switchboard switchboard-operator redis coturn probe; do
        sb_ctr images import --base-name "$SB_IMAGE_REGISTRY/$name" "$SB_IMAGES_OUT/$name.tar" \
            >>"$SB_LOGS/images.log" 2>&1 || { sb_log "images: could not import $name"; return 1; }
    done
    # The kubelet must see them all (and never pull): ask the CRI, as the kubelet does.
    for name in "$PAUSE_IMAGE" "$SB_IMAGE_REGISTRY/switchboard:$tag" "$SB_IMAGE_REGISTRY/switchboard-operator:$tag" \
        "$SB_IMAGE_REGISTRY/redis:$tag" "$SB_IMAGE_REGISTRY/coturn:$tag" "$SB_IMAGE_REGISTRY/probe:$tag"; do
        sb_crictl inspecti "$name" >/dev/null 2>&1 || { sb_log "images: the CRI does not see $name"; return 1; }
    done
    sb_export SWITCHBOARD_TEST_IMAGES "$SB_IMAGES_OUT"
    sb_export SWITCHBOARD_TEST_IMAGE_TAG "$tag"
    sb_export SWITCHBOARD_TEST_IMAGE_REGISTRY "$SB_IMAGE_REGISTRY"
}

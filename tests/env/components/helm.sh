# helm v3, built from the Go module proxy through tests/env/helm/. No process: `helm_start`
# only exports where it is. Its version is stamped like helm's own release build, and its
# built-in Kubernetes version (what `helm template` renders as .Capabilities.KubeVersion
# when it does not ask a cluster) is the one the test environment runs, KUBERNETES_VERSION
# (helm only keeps MAJOR.MINOR: v1.37.0 for v1.37.2).
#
# Exports SWITCHBOARD_TEST_HELM (path of the binary).

SB_HELM_BIN="$SB_CACHE/helm-$HELM_VERSION-kube-$KUBERNETES_VERSION-go-$SB_GO_TOOLS_KEY/helm"

helm_install() {
    local kminor ld pkg
    grep -qE "^[[:space:]]*helm\.sh/helm/v3 $HELM_VERSION( |\$)" "$SB_ENV_DIR/helm/go.mod" ||
        { sb_log "tests/env/helm/go.mod does not pin helm $HELM_VERSION (versions.env)"; return 1; }
    kminor="${KUBERNETES_VERSION#v1.}"; kminor="${kminor%%.*}"
    ld="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
    ld+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
    for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
        ld+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$kminor"
    done
    sb_go_build helm "$SB_HELM_BIN" "$SB_GO_TOOLS" helm.sh/helm/v3/cmd/helm "$ld"
}

helm_start() {
    # helm keeps its own state under HELM_* directories; the tests point those at their
    # temp dirs. Just check that the binary runs.
    "$SB_HELM_BIN" version --short >>"$SB_LOGS/helm.log" 2>&1 || { sb_log "helm does not run"; return 1; }
    sb_export SWITCHBOARD_TEST_HELM "$SB_HELM_BIN"
}

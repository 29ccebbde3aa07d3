# The observability tools: Prometheus and promtool, built from the Go module proxy through
# tests/env/prometheus/ (Go module github.com/prometheus/prometheus v0.X.Y is Prometheus
# 3.X.Y), and the dashboard schema check (tests/env/dashboard-check/: Grafana's dashboard
# schema from grafana-foundation-sdk). No process: `prometheus_start` only exports where
# they are. A test that needs a Prometheus starts its own, scraping exactly the processes
# that test started (tests/node/observability.test.mjs). Prometheus is built with
# `remove_all_sd`: only static, file and HTTP service discovery (no cloud SDKs), and
# without the web UI's assets (the HTTP API is complete).
#
# Exports SWITCHBOARD_TEST_PROMETHEUS, SWITCHBOARD_TEST_PROMTOOL and
# SWITCHBOARD_TEST_DASHBOARD_CHECK (paths of the binaries).

SB_PROMETHEUS_DIR="$SB_CACHE/prometheus-$PROMETHEUS_VERSION-go-$SB_GO_TOOLS_KEY"
SB_DASHBOARD_CHECK="$SB_CACHE/dashboard-check-$GRAFANA_FOUNDATION_SDK_VERSION/switchboard-dashboard-check"

prometheus_install() {
    local ld tool
    grep -qE "^[[:space:]]*(require )?github\.com/prometheus/prometheus $PROMETHEUS_VERSION( |\$)" \
        "$SB_ENV_DIR/prometheus/go.mod" ||
        { sb_log "tests/env/prometheus/go.mod does not pin prometheus $PROMETHEUS_VERSION (versions.env)"; return 1; }
    ld="-s -w -X github.com/prometheus/common/version.Version=$PROMETHEUS_VERSION"
    for tool in prometheus promtool; do
        sb_go_build prometheus "$SB_PROMETHEUS_DIR/$tool" "$SB_GO_TOOLS" \
            "github.com/prometheus/prometheus/cmd/$tool" "$ld" remove_all_sd || return 1
    done
    grep -qE "^require github\.com/grafana/grafana-foundation-sdk/go $GRAFANA_FOUNDATION_SDK_VERSION\$" \
        "$SB_ENV_DIR/dashboard-check/go.mod" ||
        { sb_log "tests/env/dashboard-check/go.mod does not pin grafana-foundation-sdk $GRAFANA_FOUNDATION_SDK_VERSION (versions.env)"; return 1; }
    # The checker's own source is part of the cache key: a changed main.go is rebuilt.
    sb_go_build prometheus "$SB_DASHBOARD_CHECK-$(sha256sum "$SB_ENV_DIR/dashboard-check/main.go" | cut -c1-12)" \
        "$SB_ENV_DIR/dashboard-check" . "-s -w"
}

prometheus_start() {
    local tool
    for tool in prometheus promtool; do
        "$SB_PROMETHEUS_DIR/$tool" --version >>"$SB_LOGS/prometheus.log" 2>&1 ||
            { sb_log "$tool does not run"; return 1; }
    done
    sb_export SWITCHBOARD_TEST_PROMETHEUS "$SB_PROMETHEUS_DIR/prometheus"
    sb_export SWITCHBOARD_TEST_PROMTOOL "$SB_PROMETHEUS_DIR/promtool"
    sb_export SWITCHBOARD_TEST_DASHBOARD_CHECK \
        "$SB_DASHBOARD_CHECK-$(sha256sum "$SB_ENV_DIR/dashboard-check/main.go" | cut -c1-12)"
}

// The dashboard schema check of the test environment (main.go), built by
// tests/env/components/prometheus.sh from the Go module proxy, with go.sum checked in.
// Keep in step with GRAFANA_FOUNDATION_SDK_VERSION in ../versions.env.
module switchboard.dev/tests/env/dashboard-check

go 1.26.0

require github.com/grafana/grafana-foundation-sdk/go v0.0.22

// switchboard-dashboard-check FILE...: check Grafana dashboard JSON against Grafana's own
// dashboard schema, as generated into github.com/grafana/grafana-foundation-sdk: strict
// decoding (an unknown, misspelled or mistyped field fails; so does a missing required
// one), with the options of every panel plugin and the queries of every data source the
// SDK knows decoded strictly too, then the schema's value constraints (Validate).
// Built by tests/env/components/prometheus.sh; used by tests/node/observability.test.mjs.
package main

import (
	"fmt"
	"os"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/plugins"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
)

// real turns the SDK's "no errors" (an empty cog.BuildErrors, returned as a non-nil
// error) into nil.
func real(err error) error {
	if errs, ok := err.(cog.BuildErrors); ok && len(errs) == 0 {
		return nil
	}
	return err
}

func check(path string) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var d dashboard.Dashboard
	if err := real(d.UnmarshalJSONStrict(raw)); err != nil {
		return fmt.Errorf("does not match the dashboard schema: %w", err)
	}
	if err := real(d.Validate()); err != nil {
		return fmt.Errorf("breaks a constraint of the dashboard schema: %w", err)
	}
	fmt.Printf("%s: ok (%d panels)\n", path, len(d.Panels))
	return nil
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: switchboard-dashboard-check FILE...")
		os.Exit(2)
	}
	plugins.RegisterDefaultPlugins()
	failed := false
	for _, path := range os.Args[1:] {
		if err := check(path); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", path, err)
			failed = true
		}
	}
	if failed {
		os.Exit(1)
	}
}

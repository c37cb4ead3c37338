package main

import (
	"fmt"
	"io"

	"github.com/railnet/railnet/pkg/discovery"
	"github.com/railnet/railnet/pkg/pools"
	"github.com/railnet/railnet/pkg/sysfs"
	"github.com/railnet/railnet/pkg/topology"
)

// cmdValidateConfig checks a device plugin config; with --sysfs-root it also
// resolves the pools against that node and prints what each selects.
func cmdValidateConfig(r *roots, args []string, out io.Writer) error {
	fs, err := parse("validate-config", r, args, nil)
	if err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("%w: validate-config FILE", errUsage)
	}
	cfg, err := pools.Load(fs.Arg(0))
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "%s: valid (%d pools, railPools %v, prefix %s)\n", fs.Arg(0), len(cfg.Pools), cfg.RailPools, cfg.Prefix())
	if !r.sysSet {
		return nil
	}
	sys, err := sysfs.New(r.sys)
	if err != nil {
		return fmt.Errorf("--sysfs-root: %w", err)
	}
	defer sys.Close()
	dev, _ := sysfs.New(r.dev)
	if dev != nil {
		defer dev.Close()
	}
	inv, err := discovery.NewScanner(sys, dev).Scan()
	if err != nil {
		return err
	}
	resolved, warnings, err := pools.Resolve(cfg, inv, topology.Build(inv))
	if err != nil {
		return err
	}
	for _, p := range resolved {
		healthy := 0
		for _, d := range p.Devices {
			if d.Health == pools.Healthy {
				healthy++
			}
		}
		fmt.Fprintf(out, "  %-24s %-6s %4d devices (%d healthy)\n", p.Resource, p.Kind, len(p.Devices), healthy)
	}
	for _, w := range warnings {
		fmt.Fprintf(out, "  warning: %s\n", w)
	}
	return nil
}

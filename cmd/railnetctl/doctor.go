package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"text/tabwriter"

	"github.com/railnet/railnet/pkg/doctor"
	"github.com/railnet/railnet/pkg/pools"
	"github.com/railnet/railnet/pkg/sysfs"
	"github.com/railnet/railnet/pkg/topology"
)

// exitCode ends the command with a code and no error message: doctor's
// verdict (1 warnings, 2 errors) for scripts.
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit %d", int(e)) }

func cmdDoctor(r *roots, args []string, out io.Writer) error {
	var format, config *string
	fs, err := parse("doctor", r, args, func(fs *flag.FlagSet) {
		format = formatFlag(fs, "table", "json")
		config = fs.String("config", "", "the device plugin's pool config: also check the RDMA netns mode and SR-IOV against it")
	})
	if err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: doctor takes no arguments", errUsage)
	}
	if err := checkFormat(*format, "table", "json"); err != nil {
		return err
	}
	var cfg *pools.Config
	if *config != "" {
		b, err := os.ReadFile(*config)
		if err != nil {
			return err
		}
		if cfg, err = pools.Parse(b); err != nil {
			return fmt.Errorf("%s: %w", *config, err)
		}
	}
	inv, err := scan(r)
	if err != nil {
		return err
	}
	sys, err := sysfs.New(r.sys)
	if err != nil {
		return fmt.Errorf("--sysfs-root: %w", err)
	}
	defer sys.Close()
	findings := doctor.Run(doctor.Options{Sys: sys, Config: cfg}, inv, topology.Build(inv))
	counts := map[string]int{}
	for _, f := range findings {
		counts[f.Severity]++
	}
	if *format == "json" {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		if findings == nil {
			findings = []doctor.Finding{}
		}
		if err := enc.Encode(struct {
			Findings []doctor.Finding `json:"findings"`
			Summary  map[string]int   `json:"summary"`
		}{findings, map[string]int{doctor.Error: counts[doctor.Error], doctor.Warn: counts[doctor.Warn], doctor.Info: counts[doctor.Info]}}); err != nil {
			return err
		}
	} else {
		tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		if len(findings) > 0 {
			fmt.Fprintln(tw, "SEVERITY\tCHECK\tDEVICE\tFOUND\tWANT\tFIX")
		}
		for _, f := range findings {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", f.Severity, f.Check, f.Device, f.Found, f.Want, f.Fix)
		}
		tw.Flush()
		fmt.Fprintf(out, "%d errors, %d warnings, %d notes (checks: pcie-link acs iommu gpudirect rail-consistency numa rdma-mode sriov)\n",
			counts[doctor.Error], counts[doctor.Warn], counts[doctor.Info])
	}
	if code := doctor.ExitCode(findings); code != 0 {
		return exitCode(code)
	}
	return nil
}

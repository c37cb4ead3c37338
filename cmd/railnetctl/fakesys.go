package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/railnet/railnet/pkg/fakesys"
)

func cmdFakesys(args []string, out io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: fakesys needs a subcommand: build or check", errUsage)
	}
	switch args[0] {
	case "build":
		var opts fakesys.Options
		fs, err := parse("fakesys build", nil, args[1:], func(fs *flag.FlagSet) {
			fs.BoolVar(&opts.DeviceNodes, "device-nodes", false, "make /dev entries real character devices (root)")
		})
		if err != nil {
			return err
		}
		if fs.NArg() != 2 {
			return fmt.Errorf("%w: fakesys build [--device-nodes] FIXTURE DIR", errUsage)
		}
		m, err := fakesys.Load(fs.Arg(0))
		if err != nil {
			return err
		}
		t, err := fakesys.MaterializeWith(m, fs.Arg(1), opts)
		if err != nil {
			return err
		}
		inv := m.Expected.Inventory
		fmt.Fprintf(out, "%s: %d GPUs, %d PFs, %d VFs, %d netdevs, %d RDMA devices\n  --sysfs-root %s --devfs-root %s\n",
			m.Name, inv.GPUs, inv.PFs, inv.VFs, inv.Netdevs, inv.RDMADevices, t.Sys, t.Dev)
		return nil
	case "check":
		fs, err := parse("fakesys check", nil, args[1:], nil)
		if err != nil {
			return err
		}
		if fs.NArg() == 0 {
			return fmt.Errorf("%w: fakesys check FIXTURE...", errUsage)
		}
		for _, p := range fs.Args() {
			if _, err := fakesys.Load(p); err != nil {
				return err
			}
			fmt.Fprintf(out, "%s: ok\n", p)
		}
		return nil
	}
	return fmt.Errorf("%w: unknown fakesys subcommand %q", errUsage, args[0])
}

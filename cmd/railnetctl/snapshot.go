package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/railnet/railnet/pkg/discovery"
	"github.com/railnet/railnet/pkg/sysfs"
)

func cmdSnapshot(r *roots, args []string, out io.Writer) error {
	var output *string
	fs, err := parse("snapshot", r, args, func(fs *flag.FlagSet) {
		host, _ := os.Hostname()
		output = fs.String("output", fmt.Sprintf("railnet-snapshot-%s-%s.tar.gz", host, time.Now().UTC().Format("20060102T150405Z")), "archive to write")
	})
	if err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: snapshot takes no arguments", errUsage)
	}
	sys, err := sysfs.New(r.sys)
	if err != nil {
		return fmt.Errorf("--sysfs-root: %w", err)
	}
	defer sys.Close()
	dev, err := sysfs.New(r.dev)
	if err != nil {
		return fmt.Errorf("--devfs-root: %w", err)
	}
	defer dev.Close()
	// 0600 and O_EXCL: the archive names every device of the node, and an
	// existing file is never overwritten.
	f, err := os.OpenFile(*output, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if err := discovery.WriteSnapshot(sys, dev, f); err != nil {
		f.Close()
		os.Remove(*output)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(*output)
		return err
	}
	fmt.Fprintf(out, "wrote %s\nunpack it and run: railnetctl --sysfs-root DIR/sys --devfs-root DIR/dev inventory\n", *output)
	return nil
}

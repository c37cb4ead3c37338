// Command ghwbench compares railnet's discovery with jaypipes/ghw v0.27
// (PCI() + Network(), with a chroot) on the same mocked tree in the same
// run: wall time, CPU time (getrusage) and what each finds. It is its own
// module so that ghw never enters railnet's.
//
//	go run . [-n 20] FIXTURE.json
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/jaypipes/ghw"
	"github.com/jaypipes/pcidb"

	"github.com/railnet/railnet/pkg/discovery"
	"github.com/railnet/railnet/pkg/fakesys"
	"github.com/railnet/railnet/pkg/sysfs"
)

func cpu() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// measure runs fn n times and returns wall and CPU time per run.
func measure(n int, fn func() (string, error)) (wall, cpuT time.Duration, found string, err error) {
	c0, t0 := cpu(), time.Now()
	for range n {
		if found, err = fn(); err != nil {
			return
		}
	}
	return time.Since(t0) / time.Duration(n), (cpu() - c0) / time.Duration(n), found, nil
}

func main() {
	n := flag.Int("n", 20, "runs of each")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: ghwbench [-n N] FIXTURE.json")
		os.Exit(2)
	}
	m, err := fakesys.Load(flag.Arg(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	dir, err := os.MkdirTemp("/dev/shm", "ghwbench-")
	if err != nil {
		dir, _ = os.MkdirTemp("", "ghwbench-")
	}
	defer os.RemoveAll(dir)
	tree, err := fakesys.Materialize(m, dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	db, err := pcidb.New(pcidb.WithChroot("/")) // the host's pci.ids, loaded once, outside the timing
	if err != nil {
		fmt.Fprintln(os.Stderr, "pcidb (install pci.ids):", err)
		os.Exit(1)
	}
	scan := func(lean bool) (string, error) {
		sys, err := sysfs.New(tree.Sys)
		if err != nil {
			return "", err
		}
		defer sys.Close()
		dev, err := sysfs.New(tree.Dev)
		if err != nil {
			return "", err
		}
		defer dev.Close()
		sc := discovery.NewScanner(sys, dev)
		if lean {
			sc = sc.Lean() // the daemon's scan, and railnetctl inventory --summary's
		}
		inv, err := sc.Scan()
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("%d PCI functions, %d NICs, %d RDMA devices, %d GPUs", len(inv.PCI), len(inv.NICs), len(inv.RDMA), len(inv.GPUs)), nil
	}
	ghwRun := func() (string, error) {
		p, err := ghw.PCI(ghw.WithChroot(filepath.Dir(tree.Sys)), ghw.WithDisableWarnings(), ghw.WithPCIDB(db))
		if err != nil {
			return "", err
		}
		nw, err := ghw.Network(ghw.WithChroot(filepath.Dir(tree.Sys)), ghw.WithDisableWarnings())
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("%d PCI functions, %d NICs", len(p.Devices), len(nw.NICs)), nil
	}
	rw, rc, rf, err := measure(*n, func() (string, error) { return scan(false) })
	if err != nil {
		fmt.Fprintln(os.Stderr, "railnet:", err)
		os.Exit(1)
	}
	lw, lc, lf, err := measure(*n, func() (string, error) { return scan(true) })
	if err != nil {
		fmt.Fprintln(os.Stderr, "railnet lean:", err)
		os.Exit(1)
	}
	gw, gc, gf, err := measure(*n, ghwRun)
	if err != nil {
		fmt.Fprintln(os.Stderr, "ghw:", err)
		os.Exit(1)
	}
	fmt.Printf("%s, %d runs each\n", m.Name, *n)
	fmt.Printf("railnet discovery  wall %8v  cpu %8v  %s\n", rw.Round(time.Microsecond), rc.Round(time.Microsecond), rf)
	fmt.Printf("ghw PCI+Network    wall %8v  cpu %8v  %s\n", gw.Round(time.Microsecond), gc.Round(time.Microsecond), gf)
	fmt.Printf("railnet lean       wall %8v  cpu %8v  %s\n", lw.Round(time.Microsecond), lc.Round(time.Microsecond), lf)
	fmt.Printf("ratio full         wall %.2fx    cpu %.2fx\n", float64(rw)/float64(gw), float64(rc)/float64(gc))
	fmt.Printf("ratio lean         wall %.2fx    cpu %.2fx   (the daemon; railnetctl inventory --summary)\n", float64(lw)/float64(gw), float64(lc)/float64(gc))
}

package main

import (
	"cmp"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/railnet/railnet/pkg/discovery"
	"github.com/railnet/railnet/pkg/state"
	"github.com/railnet/railnet/pkg/sysfs"
	"github.com/railnet/railnet/pkg/topology"
)

// scan opens both roots and reads the inventory.
func scan(r *roots) (*discovery.Inventory, error) { return scanLean(r, false) }

// scanLean reads the inventory, leanly when lean: what --summary shows (no
// VF rows) is the same either way, and a lean scan is half the syscalls.
func scanLean(r *roots, lean bool) (*discovery.Inventory, error) {
	sys, err := sysfs.New(r.sys)
	if err != nil {
		return nil, fmt.Errorf("--sysfs-root: %w", err)
	}
	defer sys.Close()
	dev, err := sysfs.New(r.dev)
	if err != nil {
		return nil, fmt.Errorf("--devfs-root: %w", err)
	}
	defer dev.Close()
	sc := discovery.NewScanner(sys, dev)
	if lean {
		sc = sc.Lean()
	}
	return sc.Scan()
}

func formatFlag(fs *flag.FlagSet, allowed ...string) *string {
	return fs.String("format", allowed[0], "output format: "+strings.Join(allowed, ", "))
}

func checkFormat(f string, allowed ...string) error {
	for _, a := range allowed {
		if f == a {
			return nil
		}
	}
	return fmt.Errorf("%w: --format %q: want one of %s", errUsage, f, strings.Join(allowed, ", "))
}

// attachment is a CNI record as inventory shows it.
type attachment struct {
	DeviceID    string `json:"deviceID"`
	BDF         string `json:"bdf"`
	Attach      string `json:"attach"`
	Parent      string `json:"parent,omitempty"` // a child link's parent netdev
	IfName      string `json:"ifName"`
	ContainerID string `json:"containerID"`
	Pod         string `json:"pod,omitempty"` // namespace/name
	Network     string `json:"network"`
	Phase       string `json:"phase"`
	Encryption  string `json:"encryption,omitempty"` // "ipsec (keys <name>)"
}

// attachments reads the CNI's records (root-only): what each device, and
// each shared HCA's slots, is in use by.
func attachments(dir string) ([]attachment, error) {
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	recs, errs := state.ReadOnly(dir).List()
	if len(recs) == 0 && len(errs) > 0 {
		return nil, errs[0]
	}
	var out []attachment
	for _, r := range recs {
		a := attachment{DeviceID: r.DeviceID, BDF: r.BDF, Attach: r.Attach, IfName: r.IfName, ContainerID: r.ContainerID,
			Network: r.Network, Phase: r.Phase}
		if a.Attach == "" {
			a.Attach = "move"
		}
		if r.Child != nil {
			a.Parent = r.Child.Parent
		}
		if r.PodName != "" {
			a.Pod = r.PodNamespace + "/" + r.PodName
		}
		if e := r.Encryption; e != nil {
			a.Encryption = e.Mode + " (keys " + e.Keys + ")"
		}
		out = append(out, a)
	}
	slices.SortFunc(out, func(x, y attachment) int { return cmp.Compare(x.DeviceID, y.DeviceID) })
	return out, nil
}

func cmdInventory(r *roots, args []string, out io.Writer) error {
	var format, stateDir *string
	var summary *bool
	fs, err := parse("inventory", r, args, func(fs *flag.FlagSet) {
		format = formatFlag(fs, "table", "json")
		summary = fs.Bool("summary", false, "counts and PFs only, no VF rows")
		stateDir = fs.String("state-dir", state.DefaultDir, "the CNI's attachment records (what is in use, shared HCAs' slots)")
	})
	if err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: inventory takes no arguments", errUsage)
	}
	if err := checkFormat(*format, "table", "json"); err != nil {
		return err
	}
	inv, err := scanLean(r, *summary && *format == "table")
	if err != nil {
		return err
	}
	atts, aerr := attachments(*stateDir)
	if *format == "json" {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			Summary discovery.Summary `json:"summary"`
			*discovery.Inventory
			Attachments []attachment `json:"attachments"`
		}{inv.Summary(), inv, atts})
	}
	writeInventoryTable(out, inv, r, *summary)
	writeAttachments(out, *stateDir, atts, aerr)
	return nil
}

// writeAttachments lists what the CNI has attached, each shared HCA with
// its slots in use.
func writeAttachments(out io.Writer, dir string, atts []attachment, err error) {
	if err != nil {
		fmt.Fprintf(out, "\nAttachments: %s is not readable (%v); run as root to see what is in use\n", dir, err)
		return
	}
	if len(atts) == 0 {
		fmt.Fprintf(out, "\nAttachments (%s): none\n", dir)
		return
	}
	fmt.Fprintf(out, "\nAttachments (%s): %d\n", dir, len(atts))
	slots := map[string][]attachment{}
	var shared []string
	for _, a := range atts {
		if a.Attach != "move" {
			if len(slots[a.BDF]) == 0 {
				shared = append(shared, a.BDF)
			}
			slots[a.BDF] = append(slots[a.BDF], a)
		}
	}
	for _, bdf := range shared {
		fmt.Fprintf(out, "  shared HCA %s (%s): %d slot(s) in use\n", bdf, slots[bdf][0].Parent, len(slots[bdf]))
	}
	tw := tabwriter.NewWriter(out, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "  DEVICE\tATTACH\tPOD\tCONTAINER\tIFNAME\tNETWORK\tPHASE\tENCRYPTION")
	for _, a := range atts {
		cid := a.ContainerID
		if len(cid) > 12 {
			cid = cid[:12]
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", a.DeviceID, a.Attach, orDash(a.Pod), cid, a.IfName, a.Network, a.Phase, orDash(a.Encryption))
	}
	tw.Flush()
	for _, a := range atts {
		if a.Encryption != "" {
			fmt.Fprintln(out, "  Encrypted attachments: their IP traffic is ESP; RDMA (RoCE/InfiniBand verbs) traffic on the same devices is NOT encrypted (docs/encryption.md).")
			break
		}
	}
}

func writeInventoryTable(out io.Writer, inv *discovery.Inventory, r *roots, summaryOnly bool) {
	s := inv.Summary()
	numa := make([]string, len(inv.NUMANodes))
	for i, n := range inv.NUMANodes {
		numa[i] = strconv.Itoa(n)
	}
	fmt.Fprintf(out, "Inventory of %s (devfs %s)\n", r.sys, r.dev)
	fmt.Fprintf(out, "  GPUs %d   PFs %d   VFs %d   netdevs %d   RDMA devices %d   NUMA nodes %s   warnings %d\n\n",
		s.GPUs, s.PFs, s.VFs, s.Netdevs, s.RDMADevices, orDash(strings.Join(numa, ",")), s.Warnings)

	if len(inv.GPUs) > 0 {
		tw := tabwriter.NewWriter(out, 0, 8, 2, ' ', 0)
		fmt.Fprintln(tw, "GPU\tBDF\tVENDOR:DEVICE\tCLASS\tNUMA\tDRIVER\tDEVICE NODE\tCPUS")
		for _, g := range inv.GPUs {
			fmt.Fprintf(tw, "%s\t%s\t%s:%s\t%s\t%s\t%s\t%s\t%s\n", g.Name, g.BDF, hex4(g.Vendor), hex4(g.Device),
				g.Class, numaStr(g.NUMA), orDash(g.Driver), orDash(g.DevNode), orDash(g.LocalCPUs))
		}
		tw.Flush()
		fmt.Fprintln(out)
	}
	rdma := map[string]*discovery.RDMADevice{}
	for _, d := range inv.RDMA {
		rdma[d.Name] = d
	}
	tw := tabwriter.NewWriter(out, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "BDF\tKIND\tVFS\tDRIVER\tVENDOR:DEVICE\tNUMA\tLINK\tNETDEV\tMAC\tMTU\tSTATE\tRDMA\tPORT\tGUID\tCHAR DEVICES")
	for _, n := range inv.NICs {
		if summaryOnly && n.Kind == discovery.KindVF && n.PFVisible {
			continue
		}
		kind, vfs := n.Kind, "-"
		switch {
		case n.Kind == discovery.KindVF && n.PFVisible:
			kind = fmt.Sprintf("VF%d@%s", n.VFIndex, n.PF)
		case n.Kind == discovery.KindVF:
			kind = "VF(PF not visible)"
		case n.SRIOV != nil:
			vfs = fmt.Sprintf("%d/%d", n.SRIOV.NumVFs, n.SRIOV.TotalVFs)
		}
		nd := discovery.Netdev{}
		if len(n.Netdevs) > 0 {
			nd = n.Netdevs[0]
		}
		rd, port, guid, chars := "-", "-", "-", "-"
		if len(n.RDMA) > 0 {
			rd = n.RDMA[0]
			if d := rdma[rd]; d != nil {
				guid = orDash(d.NodeGUID)
				if len(d.Ports) > 0 {
					port = d.Ports[0].State
				}
				var c []string
				for _, p := range d.CharDevs {
					c = append(c, strings.TrimPrefix(p, "/dev/infiniband/"))
				}
				chars = orDash(strings.Join(c, ","))
			}
		}
		mtu := "-"
		if nd.MTU > 0 {
			mtu = strconv.Itoa(nd.MTU)
		}
		partial := ""
		if n.Partial {
			partial = " (partial)"
		}
		fmt.Fprintf(tw, "%s\t%s%s\t%s\t%s\t%s:%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			n.BDF, kind, partial, vfs, orDash(n.Driver), hex4(n.Vendor), hex4(n.Device), numaStr(n.NUMA),
			orDash(n.LinkType), orDash(nd.Name), shortMAC(nd.MAC), mtu, orDash(nd.OperState), rd, port, guid, chars)
	}
	tw.Flush()
	var virtual []string
	for _, d := range inv.RDMA {
		if d.PCI == "" {
			virtual = append(virtual, fmt.Sprintf("%s (on %s)", d.Name, orDash(d.Netdev)))
		}
	}
	if len(virtual) > 0 {
		fmt.Fprintf(out, "\nVirtual RDMA devices: %s\n", strings.Join(virtual, ", "))
	}
	if inv.RDMACM != "" {
		fmt.Fprintf(out, "\nRDMA connection manager: %s\n", inv.RDMACM)
	}
	if len(inv.RDMA) > 0 {
		fmt.Fprintln(out, "\nNote: IPsec on a netdev does not cover RoCE/RDMA traffic (it bypasses the kernel); only NIC offload encrypts it.")
	}
	if len(inv.Warnings) > 0 {
		fmt.Fprintf(out, "\nWarnings (%d):\n", len(inv.Warnings))
		for _, w := range inv.Warnings {
			fmt.Fprintf(out, "  %s\n", w)
		}
	}
}

// shortMAC abbreviates a 20-byte IPoIB address to its port GUID part.
func shortMAC(mac string) string {
	if len(mac) > 17 {
		return "ipoib:…" + mac[len(mac)-23:]
	}
	return orDash(mac)
}

func hex4(s string) string { return strings.TrimPrefix(s, "0x") }

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func numaStr(n int) string {
	if n < 0 {
		return "-1"
	}
	return strconv.Itoa(n)
}

func cmdTopology(r *roots, args []string, out io.Writer) error {
	var format *string
	fs, err := parse("topology", r, args, func(fs *flag.FlagSet) {
		format = formatFlag(fs, "table", "json", "dot")
	})
	if err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: topology takes no arguments", errUsage)
	}
	if err := checkFormat(*format, "table", "json", "dot"); err != nil {
		return err
	}
	inv, err := scan(r)
	if err != nil {
		return err
	}
	t := topology.Build(inv)
	switch *format {
	case "json":
		return t.WriteJSON(out)
	case "dot":
		return t.WriteDOT(out)
	}
	return t.WriteTable(out)
}

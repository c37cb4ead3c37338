package topology

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
)

// WriteJSON writes {"gpus":[...],"nics":[...],"matrix":{...}}, indented,
// with sorted keys, so two nodes' outputs can be diffed.
func (t *Topology) WriteJSON(w io.Writer) error {
	out := struct {
		GPUs   []GPU                        `json:"gpus"`
		NICs   []NIC                        `json:"nics"`
		Matrix map[string]map[string]string `json:"matrix"`
	}{GPUs: t.GPUs, NICs: t.NICs, Matrix: map[string]map[string]string{}}
	if out.GPUs == nil {
		out.GPUs = []GPU{}
	}
	if out.NICs == nil {
		out.NICs = []NIC{}
	}
	for g, row := range t.Matrix {
		r := map[string]string{}
		for n, c := range row {
			r[n] = c.String()
		}
		out.Matrix[g] = r
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

// WriteTable writes the nvidia-smi-style matrix, a legend and the rails.
func (t *Topology) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	if len(t.GPUs) == 0 {
		fmt.Fprintln(tw, "no NVIDIA GPUs found: no GPU-NIC matrix")
	} else {
		hdr := []string{""}
		for _, n := range t.NICs {
			hdr = append(hdr, n.Name)
		}
		hdr = append(hdr, "CPU Affinity", "NUMA Affinity")
		fmt.Fprintln(tw, strings.Join(hdr, "\t"))
		cpus := map[string]string{}
		for _, g := range t.inv.GPUs {
			cpus[g.Name] = g.LocalCPUs
		}
		for _, g := range t.GPUs {
			row := []string{g.Name}
			for _, n := range t.NICs {
				row = append(row, t.Matrix[g.Name][n.Name].String())
			}
			row = append(row, orNA(cpus[g.Name]), numaString(g.NUMA))
			fmt.Fprintln(tw, strings.Join(row, "\t"))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "NICs:")
	tw = tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	for _, n := range t.NICs {
		fmt.Fprintf(tw, "  %s\t%s\t%s\tNUMA %s\n", n.Name, orNA(n.Netdev), n.BDF, numaString(n.NUMA))
	}
	tw.Flush()
	if len(t.Rails) > 0 {
		fmt.Fprintln(w)
		fmt.Fprintln(w, "Rails (NICs grouped by the GPUs they are closest to):")
		tw = tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
		for _, r := range t.Rails {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", r.Name, r.Class, strings.Join(r.GPUs, ","), strings.Join(r.NICs, ","))
		}
		tw.Flush()
	}
	fmt.Fprint(w, `
Legend:
  X    = Self
  SYS  = Connection traversing PCIe as well as the SMP interconnect between NUMA nodes (or NUMA locality unknown)
  NODE = Connection traversing PCIe as well as the interconnect between PCIe Host Bridges within a NUMA node
  PHB  = Connection traversing PCIe as well as a PCIe Host Bridge (typically the CPU)
  PXB  = Connection traversing multiple PCIe bridges (without traversing the PCIe Host Bridge)
  PIX  = Connection traversing at most a single PCIe bridge
Note: IPsec on a netdev does not cover RoCE/RDMA traffic, which bypasses the kernel; only NIC offload can encrypt it.
`)
	return nil
}

func orNA(s string) string {
	if s == "" {
		return "N/A"
	}
	return s
}

func numaString(n int) string {
	if n < 0 {
		return "N/A"
	}
	return strconv.Itoa(n)
}

// Edge colours by class, closest greenest.
var classColour = map[Class]string{PIX: "forestgreen", PXB: "royalblue", PHB: "darkorange", NODE: "purple", SYS: "red"}

// WriteDOT writes a Graphviz graph: the PCIe tree (host bridges grouped by
// NUMA node, the bridges on the way to GPUs and NICs) and, from each GPU,
// an edge to each NIC of its nearest class, coloured by that class.
func (t *Topology) WriteDOT(w io.Writer) error {
	var b strings.Builder
	b.WriteString("graph railnet {\n  graph [rankdir=TB, fontname=\"Helvetica\", label=\"railnet topology\", labelloc=t];\n")
	b.WriteString("  node [fontname=\"Helvetica\", fontsize=10];\n  edge [color=gray60];\n")

	type dev struct {
		id, label, shape, fill string
		anc                    []string
		numa                   int
	}
	var devs []dev
	for _, g := range t.inv.GPUs {
		devs = append(devs, dev{id: g.BDF, label: g.Name + "\\n" + g.BDF, shape: "box", fill: "palegreen", anc: g.Ancestry, numa: g.NUMA})
	}
	for _, c := range t.NICs {
		n := t.byNC[c.Name]
		label := c.Name + "\\n" + c.BDF
		if c.Netdev != "" && c.Netdev != c.Name {
			label = c.Name + "\\n" + c.Netdev + "\\n" + c.BDF
		}
		devs = append(devs, dev{id: c.BDF, label: label, shape: "box", fill: "lightblue", anc: n.Ancestry, numa: n.NUMA})
	}
	// Every element on a path to a shown device, once; host bridges by NUMA node.
	seen := map[string]bool{}
	edges := map[string]bool{}
	hostByNUMA := map[int][]string{}
	var lines []string
	for _, d := range devs {
		for i, e := range d.anc {
			if !seen[e] {
				seen[e] = true
				switch {
				case i == 0:
					hostByNUMA[d.numa] = append(hostByNUMA[d.numa], e)
				case i == len(d.anc)-1:
					lines = append(lines, fmt.Sprintf("  %q [label=\"%s\", shape=%s, style=filled, fillcolor=%s];", e, d.label, d.shape, d.fill))
				default:
					lines = append(lines, fmt.Sprintf("  %q [label=%q, shape=ellipse];", e, e))
				}
			}
			if i > 0 {
				k := d.anc[i-1] + "--" + e
				if !edges[k] {
					edges[k] = true
					lines = append(lines, fmt.Sprintf("  %q -- %q;", d.anc[i-1], e))
				}
			}
		}
	}
	numas := make([]int, 0, len(hostByNUMA))
	for n := range hostByNUMA {
		numas = append(numas, n)
	}
	slices.Sort(numas)
	for _, n := range numas {
		fmt.Fprintf(&b, "  subgraph \"cluster_numa%d\" {\n    label=\"NUMA %s\"; style=rounded; color=gray70;\n", n, numaString(n))
		slices.Sort(hostByNUMA[n])
		for _, h := range hostByNUMA[n] {
			fmt.Fprintf(&b, "    %q [label=%q, shape=hexagon, style=filled, fillcolor=lightyellow];\n", h, h)
		}
		b.WriteString("  }\n")
	}
	for _, l := range lines {
		b.WriteString(l + "\n")
	}
	for _, g := range t.inv.GPUs {
		best := SYS + 1
		for _, c := range t.NICs {
			best = min(best, t.Matrix[g.Name][c.Name])
		}
		for _, c := range t.NICs {
			if cl := t.Matrix[g.Name][c.Name]; cl == best {
				fmt.Fprintf(&b, "  %q -- %q [style=dashed, penwidth=2, color=%s, label=%q, fontcolor=%s, constraint=false];\n",
					g.BDF, c.BDF, classColour[cl], cl.String(), classColour[cl])
			}
		}
	}
	b.WriteString("}\n")
	_, err := io.WriteString(w, b.String())
	return err
}

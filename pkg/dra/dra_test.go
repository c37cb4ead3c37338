package dra

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/dynamic-resource-allocation/deviceattribute"

	"github.com/railnet/railnet/pkg/deviceplugin"
	"github.com/railnet/railnet/pkg/discovery"
	"github.com/railnet/railnet/pkg/dra/claims"
	"github.com/railnet/railnet/pkg/fakesys/fakesystest"
	"github.com/railnet/railnet/pkg/pools"
	"github.com/railnet/railnet/pkg/topology"
)

type scanned struct {
	sysRoot string
	inv     *discovery.Inventory
	topo    *topology.Topology
	want    map[string]map[string]string // fixture's expected GPU × NIC classes
}

func scan(t *testing.T, fixture string) scanned {
	t.Helper()
	m, tree := fakesystest.Build(t, fixture)
	inv := fakesystest.Scan(t, tree, false)
	return scanned{sysRoot: tree.Sys, inv: inv, topo: topology.Build(inv), want: m.Expected.GPUNic}
}

// everyNIC is one dra pool of every network function a pool may offer.
func everyNIC(t *testing.T, s scanned, extra string) []pools.Resolved {
	t.Helper()
	var vendors []string
	for _, n := range s.inv.NICs {
		if v := strings.TrimPrefix(n.Vendor, "0x"); v != "" && !slices.Contains(vendors, `"`+v+`"`) {
			vendors = append(vendors, `"`+v+`"`)
		}
	}
	cfg, err := pools.Parse([]byte(fmt.Sprintf(`{"pools":[{"name":"all","api":"dra","selectors":{"vendors":[%s]}}%s]}`, strings.Join(vendors, ","), extra)))
	if err != nil {
		t.Fatal(err)
	}
	ps, _, err := pools.Resolve(cfg, s.inv, s.topo)
	if err != nil {
		t.Fatal(err)
	}
	return ps
}

var dnsLabel = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

// The standard attributes equal what k8s.io/dynamic-resource-allocation's
// deviceattribute helpers read from the same tree; pcieRoot is the root
// complex the topology code sees; gpuLink and nearestGPU agree with the
// fixture's expected GPU × NIC matrix (taken from the real machines).
func TestAttributesOnEveryFixture(t *testing.T) {
	for _, fx := range fakesystest.Fixtures(t) {
		t.Run(fx, func(t *testing.T) {
			s := scan(t, fx)
			ps := everyNIC(t, s, "")
			p := &ps[0]
			if len(p.Devices) == 0 {
				t.Fatal("no devices")
			}
			gpuBDF := map[string]string{}
			for _, g := range s.inv.GPUs {
				gpuBDF[g.Name] = g.BDF
			}
			names := map[string]bool{}
			for i := range p.Devices {
				d := &p.Devices[i]
				a := Attributes(p, d, s.inv, s.topo)
				name := DeviceName(d.ID)
				if !dnsLabel.MatchString(name) || names[name] {
					t.Fatalf("%s: device name %q is not a unique DNS label", d.ID, name)
				}
				names[name] = true
				if len(a) > resourceapi.ResourceSliceMaxAttributesAndCapacitiesPerDevice {
					t.Fatalf("%s: %d attributes", d.ID, len(a))
				}
				for k, v := range a {
					if v.StringValue != nil && len(*v.StringValue) > resourceapi.DeviceAttributeMaxValueLength {
						t.Fatalf("%s: %s too long", d.ID, k)
					}
				}
				root, err := deviceattribute.GetPCIeRootAttributeByPCIBusID(d.BDF, deviceattribute.WithFSFromRoot(s.sysRoot))
				if err != nil {
					t.Fatalf("%s: deviceattribute: %v", d.BDF, err)
				}
				if got := a[AttrPCIeRoot]; got.StringValue == nil || *got.StringValue != *root.Value.StringValue {
					t.Fatalf("%s: pcieRoot %v, deviceattribute says %s", d.BDF, strp(got.StringValue), *root.Value.StringValue)
				}
				if n := s.inv.NIC(d.BDF); *a[AttrPCIeRoot].StringValue != n.HostBridge() {
					t.Fatalf("%s: pcieRoot %s, topology's host bridge %s", d.BDF, *a[AttrPCIeRoot].StringValue, n.HostBridge())
				}
				if got := a[AttrPCIBusID]; *got.StringValue != d.BDF {
					t.Fatalf("%s: pciBusID %s", d.BDF, *got.StringValue)
				}
				numa, err := deviceattribute.GetNUMANodeAttributeByPCIBusID(d.BDF, deviceattribute.ScalarAttribute, deviceattribute.WithFSFromRoot(s.sysRoot))
				got, has := a[AttrNUMANode]
				switch {
				case err != nil && has:
					t.Fatalf("%s: numaNode %d published; deviceattribute: %v", d.BDF, *got.IntValue, err)
				case err == nil && (!has || *got.IntValue != *numa.Value.IntValue):
					t.Fatalf("%s: numaNode %v, deviceattribute says %d", d.BDF, got.IntValue, *numa.Value.IntValue)
				}
				if len(s.inv.GPUs) == 0 {
					if _, ok := a[AttrGPULink]; ok {
						t.Fatalf("%s: gpuLink without GPUs", d.BDF)
					}
					continue
				}
				// The nearest class in the fixture's expected matrix, by
				// the NIC's column name (its PF's for a VF).
				col := d.BDF
				if n := s.inv.NIC(d.BDF); n.Kind == discovery.KindVF && n.PFVisible {
					col = n.PF
				}
				colName := topology.NICName(s.inv.NIC(col))
				best, bestGPUs := "", []string{}
				for g, row := range s.want {
					c, ok := row[colName]
					if !ok {
						continue
					}
					cc, _ := topology.ParseClass(c)
					bc, _ := topology.ParseClass(best)
					switch {
					case best == "" || cc < bc:
						best, bestGPUs = c, []string{gpuBDF[g]}
					case cc == bc:
						bestGPUs = append(bestGPUs, gpuBDF[g])
					}
				}
				if best == "" {
					continue // the fixture does not list this NIC
				}
				if got := *a[AttrGPULink].StringValue; got != best {
					t.Fatalf("%s (%s): gpuLink %s, fixture says %s", d.BDF, colName, got, best)
				}
				if got := *a[AttrNearestGPU].StringValue; !slices.Contains(bestGPUs, got) {
					t.Fatalf("%s: nearestGPU %s, fixture's nearest: %v", d.BDF, got, bestGPUs)
				}
			}
		})
	}
}

func strp(s *string) string {
	if s == nil {
		return "<none>"
	}
	return *s
}

func TestSplit(t *testing.T) {
	mk := func(n int) []resourceapi.Device {
		out := make([]resourceapi.Device, n)
		for i := range out {
			out[i].Name = fmt.Sprint(i)
		}
		return out
	}
	for _, tc := range []struct{ n, max, slices, last int }{
		{0, 128, 1, 0}, {1, 128, 1, 1}, {128, 128, 1, 128}, {129, 128, 2, 1}, {4096, 128, 32, 128}, {4097, 0, 33, 1}, {10, 3, 4, 1},
	} {
		got := Split(mk(tc.n), tc.max)
		if len(got) != tc.slices || len(got[len(got)-1]) != tc.last {
			t.Fatalf("Split(%d, %d): %d slices, last %d; want %d, %d", tc.n, tc.max, len(got), len(got[len(got)-1]), tc.slices, tc.last)
		}
		i := 0
		for _, s := range got {
			if len(s) > 128 {
				t.Fatalf("a slice of %d", len(s))
			}
			for _, d := range s {
				if d.Name != fmt.Sprint(i) {
					t.Fatalf("order: %s at %d", d.Name, i)
				}
				i++
			}
		}
		if i != tc.n {
			t.Fatalf("%d devices out of %d", i, tc.n)
		}
	}
}

// A pool of 4096 VFs is 32 slices of 128 under one pool name; devices of
// a PF whose link is down are not offered.
func TestResources(t *testing.T) {
	s := scan(t, "vf-scale")
	ps := everyNIC(t, s, "")
	d := New(Options{NodeName: "node-a"})
	res, devs := d.Resources(ps, s.inv, s.topo)
	pool, ok := res.Pools["node-a/all"]
	if !ok || len(res.Pools) != 1 {
		t.Fatalf("pools %v", res.Pools)
	}
	n := 0
	for _, sl := range pool.Slices {
		if len(sl.Devices) > 128 {
			t.Fatalf("slice of %d", len(sl.Devices))
		}
		n += len(sl.Devices)
	}
	if n != len(ps[0].Devices) || len(devs) != n || len(pool.Slices) != (n+127)/128 {
		t.Fatalf("%d devices in %d slices, %d known; pool has %d", n, len(pool.Slices), len(devs), len(ps[0].Devices))
	}
	// The first PF's link goes down: its VFs leave the slices, stay known
	// (a claim that holds one keeps it).
	down := ps[0].Devices[0].PF
	for i := range ps[0].Devices {
		if ps[0].Devices[i].PF == down {
			ps[0].Devices[i].Health = pools.Unhealthy
		}
	}
	res2, devs2 := d.Resources(ps, s.inv, s.topo)
	m := 0
	for _, sl := range res2.Pools["node-a/all"].Slices {
		for _, dv := range sl.Devices {
			m++
			if *dv.Attributes[AttrPFPCIAddress].StringValue == down {
				t.Fatalf("%s of the down PF is published", dv.Name)
			}
		}
	}
	if m >= n || len(devs2) != len(devs) {
		t.Fatalf("after PF down: %d published (was %d), %d known", m, n, len(devs2))
	}
}

func allocated(uid, name string, pods []string, results ...resourceapi.DeviceRequestAllocationResult) *resourceapi.ResourceClaim {
	c := &resourceapi.ResourceClaim{ObjectMeta: metav1.ObjectMeta{UID: types.UID(uid), Namespace: "ns", Name: name,
		Annotations: map[string]string{PodClaimNameAnnotation: "nic"}}}
	c.Status.Allocation = &resourceapi.AllocationResult{Devices: resourceapi.DeviceAllocationResult{Results: results}}
	for _, p := range pods {
		c.Status.ReservedFor = append(c.Status.ReservedFor, resourceapi.ResourceClaimConsumerReference{Resource: "pods", Name: "pod-" + p, UID: types.UID(p)})
	}
	return c
}

func result(req, pool, dev string) resourceapi.DeviceRequestAllocationResult {
	return resourceapi.DeviceRequestAllocationResult{Request: req, Driver: DriverName, Pool: pool, Device: dev}
}

// Prepare writes a CDI spec with the device plugin's env and RDMA device
// nodes and a checkpoint; a restarted driver unprepares from the
// checkpoint alone; a device is never prepared for two claims.
func TestPrepareUnprepare(t *testing.T) {
	s := scan(t, "dgx-h100-like")
	ps := everyNIC(t, s, "")
	var vfs []pools.Device
	for _, d := range ps[0].Devices {
		if len(d.RDMA) > 0 && d.PF != d.BDF && len(vfs) < 2 {
			vfs = append(vfs, d)
		}
	}
	if len(vfs) != 2 {
		t.Fatalf("want two RDMA VFs in the fixture, got %d", len(vfs))
	}
	dir := t.TempDir()
	o := Options{NodeName: "node-a", ClaimsDir: filepath.Join(dir, "dra"), CDIDir: filepath.Join(dir, "cdi"), DevfsRoot: "/devroot"}
	d := New(o)
	d.Publish(ps, s.inv, s.topo)
	pool := PoolName("node-a", "all")
	c := allocated("uid-1", "pod-nic-abcde", []string{"pod-1"}, result("nic", pool, DeviceName(vfs[0].ID)), result("nic", pool, DeviceName(vfs[1].ID)),
		resourceapi.DeviceRequestAllocationResult{Request: "gpu", Driver: "gpu.example.com", Pool: "x", Device: "gpu-0"})
	got, err := d.Prepare(c)
	if err != nil {
		t.Fatal(err)
	}
	cdiID := CDIKind + "=uid-1-nic-all"
	if len(got) != 2 || got[0].PoolName != pool || got[0].DeviceName != DeviceName(vfs[0].ID) || !slices.Equal(got[0].CDIDeviceIDs, []string{cdiID}) || len(got[1].CDIDeviceIDs) != 0 {
		t.Fatalf("Prepare: %+v", got)
	}
	var spec deviceplugin.CDISpec
	b, err := os.ReadFile(filepath.Join(o.CDIDir, "dra.railnet.io-uid-1.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &spec); err != nil || spec.Kind != CDIKind || len(spec.Devices) != 1 || spec.Devices[0].Name != "uid-1-nic-all" {
		t.Fatalf("CDI spec: %s (%v)", b, err)
	}
	env := strings.Join(spec.Devices[0].Edits.Env, "\n")
	for _, want := range []string{"PCIDEVICE_RAILNET_IO_ALL=" + vfs[0].BDF + "," + vfs[1].BDF, "NCCL_IB_HCA==" + vfs[0].RDMA[0] + "," + vfs[1].RDMA[0], "PCIDEVICE_RAILNET_IO_ALL_INFO="} {
		if !strings.Contains(env, want) {
			t.Fatalf("CDI env lacks %q:\n%s", want, env)
		}
	}
	nodes := spec.Devices[0].Edits.DeviceNodes
	if len(nodes) < len(vfs[0].CharDevs)+len(vfs[1].CharDevs) || !strings.HasPrefix(nodes[0].HostPath, "/devroot/infiniband/") {
		t.Fatalf("CDI device nodes: %+v", nodes)
	}
	ck, err := claims.Load(o.ClaimsDir, "uid-1")
	if err != nil {
		t.Fatal(err)
	}
	if ck.PodClaimName != "nic" || !slices.Equal(ck.Pods, []string{"pod-1"}) || len(ck.Devices) != 2 || ck.Devices[1].ID != vfs[1].ID || ck.Devices[0].DRAPool != pool {
		t.Fatalf("checkpoint: %+v", ck)
	}
	// The CNI's lookup finds it by pod and the pod's claim name... and
	// refuses the ambiguity of two devices in one request.
	if _, err := claims.Find(o.ClaimsDir, "pod-1", "nic"); err == nil || !strings.Contains(err.Error(), "ambiguous") {
		t.Fatalf("two devices under one name: %v", err)
	}
	// Again (a kubelet retry): the same answer.
	again, err := d.Prepare(c)
	if err != nil || fmt.Sprint(again) != fmt.Sprint(got) {
		t.Fatalf("Prepare again: %+v %v", again, err)
	}
	// Another claim for a device claim 1 holds.
	if _, err := d.Prepare(allocated("uid-2", "other", []string{"pod-2"}, result("nic", pool, DeviceName(vfs[1].ID)))); err == nil || !strings.Contains(err.Error(), "prepared for claim ns/pod-nic-abcde") {
		t.Fatalf("double allocation: %v", err)
	}
	// A device this node does not have.
	if _, err := d.Prepare(allocated("uid-3", "x", nil, result("nic", "node-b/all", DeviceName(vfs[0].ID)))); err == nil || !strings.Contains(err.Error(), "not one of this node's") {
		t.Fatalf("foreign device: %v", err)
	}
	// The daemon restarts: a new driver, nothing in memory.
	d2 := New(o)
	d2.Publish(ps, s.inv, s.topo)
	if _, err := d2.Prepare(allocated("uid-2", "other", []string{"pod-2"}, result("nic", pool, DeviceName(vfs[1].ID)))); err == nil {
		t.Fatal("after a restart, a held device was prepared for another claim")
	}
	for range 2 {
		if err := d2.Unprepare("uid-1"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(filepath.Join(o.CDIDir, "dra.railnet.io-uid-1.json")); !os.IsNotExist(err) {
		t.Fatalf("CDI spec left: %v", err)
	}
	if _, err := claims.Load(o.ClaimsDir, "uid-1"); !os.IsNotExist(err) {
		t.Fatalf("checkpoint left: %v", err)
	}
	if _, err := d2.Prepare(allocated("uid-2", "other", []string{"pod-2"}, result("nic", pool, DeviceName(vfs[1].ID)))); err != nil {
		t.Fatalf("a freed device: %v", err)
	}
	m, err := claims.Find(o.ClaimsDir, "pod-2", "nic")
	if err != nil || m.Device.ID != vfs[1].ID {
		t.Fatalf("Find: %v %v", m, err)
	}
	// One claim given one device twice: refused, nothing written.
	if _, err := d2.Prepare(allocated("uid-4", "dup", nil, result("a", pool, DeviceName(vfs[0].ID)), result("b", pool, DeviceName(vfs[0].ID)))); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Fatalf("a device twice in one claim: %v", err)
	}
	if _, err := claims.Load(o.ClaimsDir, "uid-4"); !os.IsNotExist(err) {
		t.Fatalf("a refused claim was checkpointed: %v", err)
	}
}

// The daemon scans lean (a VF's netdev name, RDMA names, character devices
// and port link layers only): on every fixture it must select the same
// pools, with the same devices, health and attributes, as a full scan.
func TestLeanScanSelectsTheSame(t *testing.T) {
	for _, fx := range fakesystest.Fixtures(t) {
		t.Run(fx, func(t *testing.T) {
			_, tree := fakesystest.Build(t, fx)
			scanWith := func(lean bool) scanned {
				inv := fakesystest.Scan(t, tree, lean)
				return scanned{sysRoot: tree.Sys, inv: inv, topo: topology.Build(inv)}
			}
			full, lean := scanWith(false), scanWith(true)
			// Every kind of pool: VFs by link type, whole HCAs shared, rails.
			var vendors []string
			for _, n := range full.inv.NICs {
				if v := `"` + strings.TrimPrefix(n.Vendor, "0x") + `"`; n.Vendor != "" && !slices.Contains(vendors, v) {
					vendors = append(vendors, v)
				}
			}
			configs := []string{`{"railPools":true}`, fmt.Sprintf(`{"pools":[{"name":"eth","api":"dra","selectors":{"vendors":[%s],"linkTypes":["ether"]}},`+
				`{"name":"ib","api":"dra","selectors":{"vendors":[%[1]s],"linkTypes":["infiniband"]}},`+
				`{"name":"hcas","kind":"rdma","shared":2,"api":"dra","selectors":{"isRdma":true}}]}`, strings.Join(vendors, ","))}
			var a []pools.Resolved
			for _, raw := range configs {
				c, err := pools.Parse([]byte(raw))
				if err != nil {
					t.Fatal(err)
				}
				pa, _, errA := pools.Resolve(c, full.inv, full.topo)
				pb, _, errB := pools.Resolve(c, lean.inv, lean.topo)
				if fmt.Sprint(errA) != fmt.Sprint(errB) {
					t.Fatalf("%s: full %v, lean %v", raw, errA, errB)
				}
				if fmt.Sprintf("%+v", pa) != fmt.Sprintf("%+v", pb) {
					t.Fatalf("%s: pools differ:\nfull %+v\nlean %+v", raw, pa, pb)
				}
				d := New(Options{NodeName: "n"})
				ra, _ := d.Resources(pa, full.inv, full.topo)
				rb, _ := d.Resources(pb, lean.inv, lean.topo)
				ja, _ := json.Marshal(ra)
				jb, _ := json.Marshal(rb)
				if string(ja) != string(jb) {
					t.Fatalf("%s: slices differ:\nfull %s\nlean %s", raw, ja, jb)
				}
				a = append(a, pa...)
			}
			n := 0
			for _, p := range a {
				n += len(p.Devices)
			}
			if n == 0 {
				t.Fatal("no devices selected: the comparison says nothing")
			}
		})
	}
}

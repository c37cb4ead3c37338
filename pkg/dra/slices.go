package dra

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"

	resourceapi "k8s.io/api/resource/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// DriverResources is what the driver publishes: ResourceSlices by pool.
type DriverResources struct {
	Pools map[string]Pool // by the API's pool name, <node>/<pool>
}

// Pool is one pool's slices, in the order the allocator tries them.
type Pool struct{ Slices []Slice }

// Slice is one ResourceSlice's devices (≤ 128).
type Slice struct{ Devices []resourceapi.Device }

// How the slices follow the scans: every Publish that changes something
// wakes the publisher, which reads this node's railnet.io slices and
// writes the pools that differ; it also re-reads them every
// resyncInterval (a slice someone deleted comes back), and after a failed
// pass retries with backoff.
const (
	resyncInterval = 2 * time.Minute
	retryMin       = 500 * time.Millisecond
	retryMax       = 30 * time.Second
)

// runSlices owns the writing of slices until ctx ends.
func (d *Driver) runSlices(ctx context.Context) {
	retry := retryMin
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.wake:
		case <-t.C:
		}
		t.Stop()
		next := resyncInterval
		if err := d.syncSlices(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			d.log.Error("DRA: ResourceSlices", "err", err, "retry", retry)
			next, retry = retry, min(2*retry, retryMax)
		} else {
			retry = retryMin
		}
		t.Reset(next)
	}
}

// syncSlices makes this node's railnet.io slices what the last scan
// computed. A pool whose slices already say exactly that is not touched;
// one that differs is written as a new generation (slices updated in
// place, in name order, then created or deleted to the new count), so the
// scheduler never mixes two scans' devices. Pools no longer published are
// deleted.
func (d *Driver) syncSlices(ctx context.Context) error {
	d.syncMu.Lock() // one pass at a time: two would write one change twice
	defer d.syncMu.Unlock()
	d.mu.Lock()
	res := d.resources
	d.mu.Unlock()
	if res == nil {
		return nil // no scan yet: what a previous process published stays until one
	}
	if d.nodeUID == "" {
		uid, err := d.o.Client.NodeUID(ctx, d.o.NodeName)
		if err != nil {
			return fmt.Errorf("node %s: %w", d.o.NodeName, err)
		}
		d.nodeUID = uid
	}
	have, err := d.o.Client.ListSlices(ctx, "spec.driver="+DriverName+",spec.nodeName="+d.o.NodeName)
	if err != nil {
		return err
	}
	byPool := map[string][]resourceapi.ResourceSlice{}
	for _, s := range have {
		byPool[s.Spec.Pool.Name] = append(byPool[s.Spec.Pool.Name], s)
	}
	written, devices := 0, 0
	for _, name := range slices.Sorted(maps.Keys(res.Pools)) {
		want := res.Pools[name].Slices
		old := byPool[name]
		delete(byPool, name)
		for _, s := range want {
			devices += len(s.Devices)
		}
		slices.SortFunc(old, func(a, b resourceapi.ResourceSlice) int { return cmp.Compare(a.Name, b.Name) })
		if d.upToDate(old, want) {
			continue
		}
		if err := d.writePool(ctx, name, old, want); err != nil {
			return fmt.Errorf("pool %s: %w", name, err)
		}
		written++
	}
	for _, name := range slices.Sorted(maps.Keys(byPool)) {
		for _, s := range byPool[name] {
			if err := d.o.Client.DeleteSlice(ctx, s.Name, s.UID); err != nil && !apierrors.IsNotFound(err) {
				return fmt.Errorf("pool %s no longer published: %w", name, err)
			}
		}
		written++
	}
	if written > 0 {
		d.log.Info("DRA: ResourceSlices published", "pools", len(res.Pools), "devices", devices, "written", written)
	}
	return nil
}

// upToDate: the pool's slices are one generation, as many as wanted, and
// hold, in name order, the wanted devices (compared as the API stores
// them: JSON, which ignores nil versus empty).
func (d *Driver) upToDate(old []resourceapi.ResourceSlice, want []Slice) bool {
	if len(old) != len(want) {
		return false
	}
	for i, s := range old {
		if s.Spec.Pool.Generation != old[0].Spec.Pool.Generation || s.Spec.Pool.ResourceSliceCount != int64(len(want)) ||
			!d.owned(s.OwnerReferences) || !sameDevices(s.Spec.Devices, want[i].Devices) {
			return false
		}
	}
	return true
}

func (d *Driver) owned(refs []metav1.OwnerReference) bool {
	return len(refs) == 1 && refs[0].Kind == "Node" && refs[0].Name == d.o.NodeName && refs[0].UID == d.nodeUID
}

func sameDevices(a, b []resourceapi.Device) bool {
	ja, err1 := json.Marshal(a)
	jb, err2 := json.Marshal(b)
	if len(a) == 0 && len(b) == 0 {
		return true
	}
	return err1 == nil && err2 == nil && bytes.Equal(ja, jb)
}

func (d *Driver) writePool(ctx context.Context, name string, old []resourceapi.ResourceSlice, want []Slice) error {
	var gen int64
	for _, s := range old {
		gen = max(gen, s.Spec.Pool.Generation)
	}
	gen++
	node := d.o.NodeName
	owner := []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: node, UID: d.nodeUID, Controller: new(true)}}
	for i, w := range want {
		spec := resourceapi.ResourceSliceSpec{Driver: DriverName, NodeName: &node, Devices: w.Devices,
			Pool: resourceapi.ResourcePool{Name: name, Generation: gen, ResourceSliceCount: int64(len(want))}}
		if i < len(old) {
			s := old[i]
			s.Spec, s.OwnerReferences = spec, owner
			if _, err := d.o.Client.UpdateSlice(ctx, &s, DriverName); err != nil {
				return err
			}
			continue
		}
		s := &resourceapi.ResourceSlice{ObjectMeta: metav1.ObjectMeta{GenerateName: slicePrefix(i, node), OwnerReferences: owner}, Spec: spec}
		if _, err := d.o.Client.CreateSlice(ctx, s, DriverName); err != nil {
			return err
		}
	}
	for _, s := range old[min(len(old), len(want)):] {
		if err := d.o.Client.DeleteSlice(ctx, s.Name, s.UID); err != nil && !apierrors.IsNotFound(err) {
			return err
		}
	}
	return nil
}

// slicePrefix: a slice's index leads its name, so name order is the
// pool's order (the allocator tries slices first to last); the server
// appends five random characters.
func slicePrefix(i int, node string) string {
	p := fmt.Sprintf("%03d-%s-%s", i, DriverName, node)
	if len(p) > 57 {
		p = p[:57]
	}
	return p + "-"
}

package dra

import (
	"context"
	"fmt"
	"reflect"
	"time"

	resourceapi "k8s.io/api/resource/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/railnet/railnet/pkg/state"
)

// NetworkData writes status.devices[].networkData (KEP-4817) of the claims
// whose devices the CNI attached: interface name, addresses and MAC, read
// from the CNI's records once ADD is done. It needs update on
// resourceclaims/status and associated-node:update on resourceclaims/driver
// for railnet.io, nothing else.
type NetworkData struct {
	Driver   *Driver
	StateDir string // the CNI's records
	written  map[string]resourceapi.NetworkDeviceData
}

// Run syncs every interval until ctx ends, and every ten intervals
// collects checkpoints of claims that are gone.
func (n *NetworkData) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for i := 0; ; i++ {
		n.Sync(ctx)
		if i%10 == 9 {
			n.Driver.Collect(ctx)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Sync writes what changed since the last call.
func (n *NetworkData) Sync(ctx context.Context) {
	if n.written == nil {
		n.written = map[string]resourceapi.NetworkDeviceData{}
	}
	recs, _ := state.ReadOnly(n.StateDir).List()
	for _, r := range recs {
		if r.Claim == nil || r.Net == nil || r.Phase != state.PhaseDone || r.Claim.Driver != DriverName {
			continue
		}
		want := resourceapi.NetworkDeviceData{InterfaceName: r.Net.IfName, IPs: r.Net.IPs, HardwareAddress: r.Net.MAC}
		k := r.Claim.UID + "/" + r.Claim.Pool + "/" + r.Claim.Device
		if old, ok := n.written[k]; ok && reflect.DeepEqual(old, want) {
			continue
		}
		if err := n.write(ctx, r.Claim, want); err != nil {
			n.Driver.log.Warn("DRA: networkData", "claim", r.Claim.Namespace+"/"+r.Claim.Name, "err", err)
			continue
		}
		n.written[k] = want
		n.Driver.log.Info("DRA: networkData written", "claim", r.Claim.Namespace+"/"+r.Claim.Name, "device", r.Claim.Device,
			"interface", want.InterfaceName, "ips", want.IPs)
	}
}

func (n *NetworkData) write(ctx context.Context, ref *state.ClaimRef, want resourceapi.NetworkDeviceData) error {
	cl := n.Driver.o.Client
	if cl == nil {
		return fmt.Errorf("no Kubernetes client")
	}
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	c, err := cl.GetClaim(ctx, ref.Namespace, ref.Name)
	if err != nil {
		return err
	}
	if string(c.UID) != ref.UID {
		return fmt.Errorf("claim %s/%s is another claim now (UID %s, attached under %s)", ref.Namespace, ref.Name, c.UID, ref.UID)
	}
	i := -1
	for j, d := range c.Status.Devices {
		if d.Driver == DriverName && d.Pool == ref.Pool && d.Device == ref.Device {
			i = j
		}
	}
	if i < 0 {
		c.Status.Devices = append(c.Status.Devices, resourceapi.AllocatedDeviceStatus{Driver: DriverName, Pool: ref.Pool, Device: ref.Device})
		i = len(c.Status.Devices) - 1
	} else if nd := c.Status.Devices[i].NetworkData; nd != nil && reflect.DeepEqual(*nd, want) {
		return nil
	}
	c.Status.Devices[i].NetworkData = &want
	_, err = cl.UpdateClaimStatus(ctx, c, DriverName)
	if apierrors.IsConflict(err) {
		return fmt.Errorf("claim changed meanwhile; next pass: %w", err)
	}
	return err
}

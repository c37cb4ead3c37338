package agent

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	podresourcesapi "k8s.io/kubelet/pkg/apis/podresources/v1"

	"github.com/railnet/railnet/pkg/dra/claims"
)

// DefaultPodResourcesSocket is the kubelet's pod-resources endpoint.
const DefaultPodResourcesSocket = "/var/lib/kubelet/pod-resources/kubelet.sock"

// KubeletPods asks the kubelet's pod-resources API (v1 List) which devices
// running pods hold. One connection, opened lazily and kept: the reconciler
// asks once per pass.
type KubeletPods struct {
	Socket  string
	Timeout time.Duration // per List; default 5s

	conn *grpc.ClientConn
}

// Held maps every device ID that a running pod's container holds to the pods.
func (k *KubeletPods) Held(ctx context.Context) (map[string][]PodRef, error) {
	if k.conn == nil {
		conn, err := grpc.NewClient("unix://"+k.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, fmt.Errorf("pod-resources %s: %w", k.Socket, err)
		}
		k.conn = conn
	}
	timeout := k.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	resp, err := podresourcesapi.NewPodResourcesListerClient(k.conn).List(ctx, &podresourcesapi.ListPodResourcesRequest{})
	if err != nil {
		return nil, fmt.Errorf("pod-resources %s: List: %w", k.Socket, err)
	}
	held := map[string][]PodRef{}
	for _, p := range resp.GetPodResources() {
		ref := PodRef{Namespace: p.GetNamespace(), Name: p.GetName()}
		for _, c := range p.GetContainers() {
			for _, d := range c.GetDevices() {
				for _, id := range d.GetDeviceIds() {
					held[id] = append(held[id], ref)
				}
			}
			for _, dr := range c.GetDynamicResources() {
				for _, r := range dr.GetClaimResources() {
					if id := DRAHeldID(r.GetDriverName(), r.GetPoolName(), r.GetDeviceName()); id != "" {
						held[id] = append(held[id], ref)
					}
				}
			}
		}
	}
	return held, nil
}

// Close drops the connection.
func (k *KubeletPods) Close() error {
	if k.conn == nil {
		return nil
	}
	return k.conn.Close()
}

// DRAHeldID is how Held names a device a pod holds through a DRA claim of
// railnet.io's: its slice pool and device name ("" for other drivers).
func DRAHeldID(driver, pool, device string) string {
	if driver != claims.Driver {
		return ""
	}
	return "dra:" + pool + "/" + device
}

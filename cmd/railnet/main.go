// Command railnet is the CNI plugin: it hands an SR-IOV VF, a whole netdev
// or an RDMA device to a pod and takes it back on DEL exactly as it was.
package main

import (
	"runtime"

	"github.com/containernetworking/cni/pkg/skel"

	"github.com/railnet/railnet/pkg/cni"
)

// Namespace work (IPAM address configuration) switches this thread.
func init() { runtime.LockOSThread() }

var version = "dev"

func main() {
	p := &cni.Plugin{}
	skel.PluginMainFuncs(p.Funcs(), cni.Versions, "railnet CNI "+version)
}

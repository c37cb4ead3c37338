package config

import (
	"errors"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

// A netconf of any version parses or fails with a typed error; no panic.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		`{"cniVersion":"0.3.1","name":"n","type":"railnet","deviceID":"0000:18:00.1","vlan":5,"vlanQoS":2}`,
		`{"cniVersion":"0.4.0","name":"n","type":"railnet","pciBusID":"0000:18:00.1","max_tx_rate":4294967296}`,
		`{"cniVersion":"1.0.0","name":"n","type":"railnet","runtimeConfig":{"mac":"02:00:00:00:00:01","CNIDeviceInfoFile":"/var/run/k8s.cni.cncf.io/devinfo/x"}}`,
		`{"cniVersion":"1.1.0","name":"n","type":"railnet","deviceID":"0000:05:00.0#3","mtu":9000,"ipam":{"type":"host-local"}}`,
		`{"cniVersion":"1.1.0","name":"n","type":"railnet","sysfsRoot":"/tmp/x","args":{"cni":{"ips":["10.0.0.1/24"]}}}`,
		`{"name":null,"type":7}`, `[]`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(b)
		if err != nil {
			var te *types.Error
			if !errors.As(err, &te) || te.Code == 0 {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		_, _ = c.Device()
		_, _ = c.DeviceInfoFile()
		_ = c.Root()
		_ = c.VLANProtoNumber()
	})
}

package cni

import (
	"errors"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/railnet/railnet/pkg/cni/config"
)

// prevResult decodes what CHECK gets: no panic, typed errors only.
// (interfaces:[null] used to crash CHECK with SIGSEGV.)
func FuzzPrevResult(f *testing.F) {
	for _, s := range []string{
		`{"cniVersion":"1.1.0","name":"n","type":"railnet","prevResult":{"cniVersion":"1.1.0","interfaces":[null]}}`,
		`{"cniVersion":"1.1.0","name":"n","type":"railnet","prevResult":{"cniVersion":"1.1.0","ips":[null]}}`,
		`{"cniVersion":"1.1.0","name":"n","type":"railnet","prevResult":{"cniVersion":"1.1.0","routes":[null]}}`,
		`{"cniVersion":"1.1.0","name":"n","type":"railnet","prevResult":{"cniVersion":"1.1.0","interfaces":[{"name":"net1"}],"ips":[{"address":"10.0.0.2/24","interface":7}]}}`,
		`{"cniVersion":"0.3.1","name":"n","type":"railnet","prevResult":{"cniVersion":"0.3.1","interfaces":[{"name":"net1","mac":"02:00:00:00:00:01"}],"ips":[{"version":"4","address":"10.0.0.2/24","interface":0}]}}`,
		`{"cniVersion":"0.4.0","name":"n","type":"railnet","prevResult":{"cniVersion":"0.4.0","ips":[{"version":"4","address":"10.0.0.2/24","interface":-1}]}}`,
		`{"cniVersion":"1.0.0","name":"n","type":"railnet","prevResult":{}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		conf, err := config.Parse(b)
		if err != nil {
			return
		}
		prev, err := prevResult(conf)
		if err != nil {
			var te *types.Error
			if !errors.As(err, &te) || te.Code == 0 {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		for _, ip := range prev.IPs {
			_ = ip.Address.String()
			if ip.Interface != nil {
				_ = prev.Interfaces[*ip.Interface].Name
			}
		}
		for _, r := range prev.Routes {
			_ = r.Dst.String()
		}
	})
}

func TestPrevResultNulls(t *testing.T) {
	for _, s := range []string{
		`{"cniVersion":"1.1.0","name":"n","type":"railnet","prevResult":{"cniVersion":"1.1.0","interfaces":[null]}}`,
		`{"cniVersion":"1.1.0","name":"n","type":"railnet","prevResult":{"cniVersion":"1.1.0","ips":[null]}}`,
		`{"cniVersion":"1.1.0","name":"n","type":"railnet","prevResult":{"cniVersion":"1.1.0","interfaces":[],"ips":[{"address":"10.0.0.2/24","interface":0}]}}`,
	} {
		conf, err := config.Parse([]byte(s))
		if err != nil {
			t.Fatal(err)
		}
		var te *types.Error
		if _, err := prevResult(conf); !errors.As(err, &te) || te.Code != types.ErrDecodingFailure {
			t.Errorf("%s: %v, want code 6", s, err)
		}
	}
}

// CNI_ARGS come from the runtime (and, through Multus, from pod
// annotations): any string parses without a panic.
func FuzzPodIdentity(f *testing.F) {
	for _, s := range []string{"", "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;K8S_POD_UID=u", ";;==;K8S_POD_NAME", "K8S_POD_NAME=a=b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ns, name, uid := podIdentity(s)
		if len(ns)+len(name)+len(uid) > len(s) {
			t.Fatalf("identity longer than its input: %q %q %q", ns, name, uid)
		}
	})
}

package cni

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"syscall"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
)

// childExec runs delegated plugins (IPAM) so that they die with railnet: a
// runtime that kills railnet mid-ADD must not leave an IPAM ADD running
// on its own, which could allocate an address after DEL has released it.
type childExec struct{}

func (childExec) ExecPlugin(ctx context.Context, pluginPath string, stdin []byte, environ []string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	c := exec.CommandContext(ctx, pluginPath)
	c.Env, c.Stdin, c.Stdout, c.Stderr = environ, bytes.NewReader(stdin), &stdout, &stderr
	c.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := c.Run(); err != nil {
		e := &types.Error{}
		switch {
		case stdout.Len() > 0 && json.Unmarshal(stdout.Bytes(), e) == nil && e.Msg != "":
		case stderr.Len() > 0:
			e.Msg = fmt.Sprintf("%s failed: %q: %v", pluginPath, stderr.String(), err)
		default:
			e.Msg = fmt.Sprintf("%s failed: %v", pluginPath, err)
		}
		return nil, e
	}
	return stdout.Bytes(), nil
}

func (childExec) FindInPath(plugin string, paths []string) (string, error) {
	return invoke.FindInPath(plugin, paths)
}

func (childExec) Decode(b []byte) (version.PluginInfo, error) {
	return (&version.PluginDecoder{}).Decode(b)
}

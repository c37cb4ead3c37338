package cni

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"time"
)

// waitForOrphans waits until no process is left running an ADD for this
// attachment: the delegated plugins of an ADD that was killed (a runtime's
// timeout) outlive it, and an IPAM plugin among them may still be
// allocating. They are found by their environment, which names the
// command, the container and the interface.
func waitForOrphans(containerID, ifName string, timeout time.Duration) error {
	want := [][]byte{[]byte("CNI_COMMAND=ADD"), []byte("CNI_CONTAINERID=" + containerID), []byte("CNI_IFNAME=" + ifName)}
	self := os.Getpid()
	deadline := time.Now().Add(timeout)
	for {
		pid := findOrphan(want, self)
		if pid == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("process %d still runs an ADD of %s/%s after %v", pid, containerID, ifName, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func findOrphan(want [][]byte, self int) int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		env, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err != nil || len(env) == 0 {
			continue // gone, or a kernel thread
		}
		vars := bytes.Split(env, []byte{0})
		found := 0
		for _, w := range want {
			for _, v := range vars {
				if bytes.Equal(v, w) {
					found++
					break
				}
			}
		}
		if found == len(want) && !zombie(e.Name()) {
			return pid
		}
	}
	return 0
}

// zombie: an exited process whose parent has not reaped it yet runs nothing.
func zombie(pid string) bool {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return true
	}
	if i := bytes.LastIndexByte(b, ')'); i >= 0 && i+2 < len(b) {
		return b[i+2] == 'Z' || b[i+2] == 'X'
	}
	return false
}

package cni

import "golang.org/x/sys/unix"

// notify asks the kernel to announce the interface's addresses when it
// comes up: a gratuitous ARP per IPv4 address (arp_notify) and unsolicited
// neighbour advertisements (ndisc_notify). The caller runs in the pod's
// netns, before the link is up. The kernel's announcement replaces one of
// our own: a packet socket costs an RCU grace period (10-20 ms) to close,
// which every pod's start would wait for.
func notify(ifName string) {
	writeSysctl("/proc/sys/net/ipv4/conf/"+ifName+"/arp_notify", "1")
	writeSysctl("/proc/sys/net/ipv6/conf/"+ifName+"/ndisc_notify", "1")
}

func writeSysctl(path, v string) {
	fd, err := unix.Open(path, unix.O_WRONLY, 0)
	if err != nil {
		return
	}
	unix.Write(fd, []byte(v))
	unix.Close(fd)
}

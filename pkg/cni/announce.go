package cni

import (
	"encoding/binary"
	"log/slog"
	"net"

	current "github.com/containernetworking/cni/pkg/types/100"
	"golang.org/x/sys/unix"
)

// announce tells the segment where the pod's addresses now live: one
// gratuitous ARP per IPv4 address, sent from inside the pod's netns (the
// caller runs in it). IPv6 neighbours learn from the kernel's DAD and
// ndisc_notify, which is switched on for the interface.
func announce(log *slog.Logger, ifName string, res *current.Result) {
	writeSysctl("/proc/sys/net/ipv6/conf/"+ifName+"/ndisc_notify", "1")
	writeSysctl("/proc/sys/net/ipv4/conf/"+ifName+"/arp_notify", "1")
	ifc, err := net.InterfaceByName(ifName)
	if err != nil || len(ifc.HardwareAddr) != 6 {
		return // InfiniBand (20-byte addresses) has no ARP of this shape
	}
	for _, ip := range res.IPs {
		if v4 := ip.Address.IP.To4(); v4 != nil {
			if err := sendGARP(ifc, v4); err != nil {
				log.Warn("gratuitous ARP", "ip", v4, "err", err)
			}
		}
	}
}

func writeSysctl(path, v string) {
	fd, err := unix.Open(path, unix.O_WRONLY, 0)
	if err != nil {
		return
	}
	unix.Write(fd, []byte(v))
	unix.Close(fd)
}

// sendGARP broadcasts an ARP reply announcing ip at the interface's MAC.
func sendGARP(ifc *net.Interface, ip net.IP) error {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(htons(unix.ETH_P_ARP)))
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	bcast := []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	frame := make([]byte, 0, 42)
	frame = append(frame, bcast...)
	frame = append(frame, ifc.HardwareAddr...)
	frame = binary.BigEndian.AppendUint16(frame, unix.ETH_P_ARP)
	frame = binary.BigEndian.AppendUint16(frame, 1)      // Ethernet
	frame = binary.BigEndian.AppendUint16(frame, 0x0800) // IPv4
	frame = append(frame, 6, 4)
	frame = binary.BigEndian.AppendUint16(frame, 2) // reply
	frame = append(frame, ifc.HardwareAddr...)
	frame = append(frame, ip...)
	frame = append(frame, bcast...)
	frame = append(frame, ip...)
	sa := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ARP), Ifindex: ifc.Index, Halen: 6}
	copy(sa.Addr[:], bcast)
	return unix.Sendto(fd, frame, 0, sa)
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

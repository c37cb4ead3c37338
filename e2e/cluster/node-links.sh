#!/bin/sh
# The host links of the mocked node (node.json): each PF is a bridge (the
# NIC's embedded switch), each VF a veth whose peer is a port of it, with
# the names, MACs and MTUs node.json gives them. Run on the node, as root.
set -e
# pf NAME MAC VF-PREFIX PEER-PREFIX VF-MAC-PREFIX VF-MAC-FIRST COUNT
pf() {
	ip link add "$1" type bridge
	ip link set "$1" address "$2" mtu 1500 up
	n=0
	while [ $n -lt "$7" ]; do
		ip link add "$3$n" type veth peer name "$4$n"
		ip link set "$3$n" address "$5$(printf %02x $(($6 + n)))" mtu 1500 up
		ip link set "$4$n" master "$1" up
		n=$((n + 1))
	done
}
# The RoCE NIC beside GPU0: the e2e-vf pool's VFs, the e2e-roce slots.
pf rne2epf 02:e2:e0:00:00:00 rne2ev rne2eb 02:e2:e0:00:01: 0 4
# The e2e-dra pool: a NIC on each root complex (pci0000:00, pci0000:80).
pf rne2edpa 02:e2:e0:00:02:00 rne2eda rne2epa 02:e2:e0:00:02: 16 2
pf rne2edpb 02:e2:e0:00:03:00 rne2edb rne2epb 02:e2:e0:00:03: 16 2

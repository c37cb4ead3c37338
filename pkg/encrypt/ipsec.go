// Package encrypt installs, checks and removes the encryption of a railnet
// attachment in its pod's network namespace, with no control plane: every
// value comes from the namespace's key file and the addresses (see
// docs/encryption.md). IPsec: ESP in transport mode with
// rfc4106(gcm(aes)), one SA per direction of every pair in the subnet and
// key id, 64-bit extended sequence numbers that start from the time, and
// policies that require ESP to and from the subnet.
package encrypt

import (
	"errors"
	"fmt"
	"net/netip"
	"syscall"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/railnet/railnet/pkg/keys"
	"github.com/railnet/railnet/pkg/state"
)

// FromRecord is the IPsec configuration an attachment record describes.
func FromRecord(e *state.Encryption) IPsec {
	local, _ := netip.ParseAddr(e.Local)
	subnet, _ := netip.ParsePrefix(e.Subnet)
	return IPsec{Local: local, Subnet: subnet, IfIndex: e.IfIndex, Reqid: e.Reqid, Offload: e.Offload}
}

// Offload modes.
const (
	OffloadOff       = "off"
	OffloadPreferred = "preferred"
	OffloadRequired  = "required"
)

// IPsec is one attachment's ESP configuration.
type IPsec struct {
	Local   netip.Addr
	Subnet  netip.Prefix
	IfIndex int    // the pod's link: the out policy's selector and the offload device
	Reqid   uint32 // marks this attachment's states and policy templates
	Offload string
}

// Report says what a Sync did.
type Report struct {
	Added, Removed, Advanced int
	Sender                   uint8   // the key id sending now (0: none may send yet)
	Receiving                []uint8 // key ids installed for receiving
	Offloaded                bool
	OffloadRefused           error // preferred: why the NIC did not take it
}

// ErrOffload is returned when offload is required and the device cannot.
var ErrOffload = errors.New("the device does not offload ESP")

// Peers lists the addresses of the subnet other than local (for IPv4,
// without the network and broadcast addresses of a subnet of 4 or more).
func Peers(subnet netip.Prefix, local netip.Addr) []netip.Addr {
	subnet = subnet.Masked()
	var out []netip.Addr
	first := subnet.Addr()
	bits := subnet.Addr().BitLen() - subnet.Bits()
	v4edges := subnet.Addr().Is4() && bits >= 2
	var last netip.Addr
	if v4edges {
		b := first.As4()
		n := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
		n |= 1<<bits - 1
		last = netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
	}
	for a := first; subnet.Contains(a); a = a.Next() {
		if a == local || (v4edges && (a == first || a == last)) {
			continue
		}
		out = append(out, a)
	}
	return out
}

// Size is the number of addresses of the subnet (capped).
func Size(subnet netip.Prefix) uint64 {
	bits := subnet.Addr().BitLen() - subnet.Bits()
	if bits >= 63 {
		return 1 << 63
	}
	return 1 << bits
}

// Index is a's host index in subnet (its offset from the subnet's first
// address).
func Index(subnet netip.Prefix, a netip.Addr) uint32 {
	x, y := subnet.Masked().Addr().As16(), a.As16()
	var d uint32
	for i := 12; i < 16; i++ {
		d = d<<8 | uint32(y[i]-x[i])
	}
	// Borrow-free: the subnets railnet accepts differ only in the low bytes.
	return d
}

type saKey struct {
	dst netip.Addr
	spi uint32
}

// epochFloor is the start of the current 2^32-µs epoch of 64-bit
// sequence numbers: the high word every sender uses now.
func epochFloor(now time.Time) uint64 { return uint64(now.UnixMicro()) &^ 0xffffffff }

// desired lists the SAs the keys ask for at now.
func (c IPsec) desired(set *keys.Set, now time.Time, offload int) (map[saKey]sa, keys.Key, bool) {
	sender, ok := set.Sender(now)
	li := Index(c.Subnet, c.Local)
	start := keys.StartSequence(now)
	peers := Peers(c.Subnet, c.Local)
	want := make(map[saKey]sa, len(peers)*(len(set.Keys)+1))
	for _, p := range peers {
		pi := Index(c.Subnet, p)
		for _, k := range set.Keys {
			// The receiver's window starts at the current epoch: the high
			// word of every sender's sequence now.
			in := sa{src: p, dst: c.Local, spi: keys.SPI(k.ID, pi), reqid: c.Reqid, offload: offload, seq: epochFloor(now)}
			want[saKey{in.dst, in.spi}] = in
		}
		if ok {
			out := sa{src: c.Local, dst: p, spi: keys.SPI(sender.ID, li), reqid: c.Reqid, outbound: true, seq: start, offload: offload}
			want[saKey{out.dst, out.spi}] = out
		}
	}
	return want, sender, ok
}

func keyByID(set *keys.Set, id uint8) (keys.Key, bool) {
	for _, k := range set.Keys {
		if k.ID == id {
			return k, true
		}
	}
	return keys.Key{}, false
}

// deriver fills in SAs' derived keys, one HKDF extract per key id, into
// one slab that wipe clears.
type deriver struct {
	set  *keys.Set
	by   map[uint8]*keys.ESPDeriver
	slab []byte
}

func (d *deriver) get(id uint8) *keys.ESPDeriver {
	e := d.by[id]
	if e == nil {
		k, _ := keyByID(d.set, id)
		e = keys.NewESP(k)
		d.by[id] = e
	}
	return e
}

// materials derives the keys of every SA in s.
func (d *deriver) materials(s []sa) {
	n := 0
	for i := range s {
		n += d.get(keys.SPIKeyID(s[i].spi)).Len()
	}
	d.slab = make([]byte, n)
	at := 0
	for i := range s {
		e := d.get(keys.SPIKeyID(s[i].spi))
		s[i].material = d.slab[at : at+e.Len() : at+e.Len()]
		e.DeriveTo(s[i].material, s[i].src, s[i].dst)
		at += e.Len()
	}
}

func (d *deriver) wipe() {
	for _, e := range d.by {
		e.Wipe()
	}
	clear(d.slab)
}

func (c IPsec) policies() []policy {
	host := netip.PrefixFrom(c.Local, c.Local.BitLen())
	return []policy{
		// The pod's own address to itself (loopback) needs no ESP.
		{sel: selector{dst: host, src: host}, dir: policyOut, priority: 100},
		{sel: selector{dst: host, src: host}, dir: policyIn, priority: 100},
		{sel: selector{dst: c.Subnet.Masked(), src: host, ifindex: c.IfIndex}, dir: policyOut, priority: 200, reqid: c.Reqid},
		{sel: selector{dst: host, src: c.Subnet.Masked()}, dir: policyIn, priority: 200, reqid: c.Reqid},
	}
}

// Sync makes the namespace's states and policies for this attachment what
// the keys say at now: SAs from every peer under every key id, SAs to
// every peer under the sending key, none other; new ones first, then the
// old removed, so traffic never finds no SA. Sequences behind the current
// epoch move forward. The first call installs everything (ADD); later
// ones rotate (the DaemonSet, on a key file's change or a sendAfter).
func (c IPsec) Sync(ns netns.NsHandle, set *keys.Set, now time.Time) (Report, error) {
	var rep Report
	if n := uint64(len(Peers(c.Subnet, c.Local))); n == 0 {
		return rep, fmt.Errorf("subnet %s has no peer for %s", c.Subnet, c.Local)
	}
	x, err := dial(ns)
	if err != nil {
		return rep, err
	}
	defer x.Close()
	have, err := x.dumpStates(c.Reqid)
	if err != nil {
		return rep, fmt.Errorf("list SAs: %w", err)
	}
	haveBy := map[saKey]saState{}
	for _, s := range have {
		haveBy[saKey{s.dst, s.spi}] = s
		rep.Offloaded = rep.Offloaded || s.offload
	}
	offload := 0
	if c.Offload != OffloadOff && c.Offload != "" && (len(have) == 0 || rep.Offloaded) {
		offload = c.IfIndex
	}
	want, sender, sending := c.desired(set, now, offload)
	if sending {
		rep.Sender = sender.ID
	}
	rep.Receiving = set.IDs()
	adds := make([]sa, 0, len(want))
	d := &deriver{set: set, by: map[uint8]*keys.ESPDeriver{}}
	defer d.wipe()
	for k, s := range want {
		if _, ok := haveBy[k]; !ok {
			adds = append(adds, s)
		}
	}
	d.materials(adds)
	// Offload is asked of the first SA alone: the device takes all or none.
	if offload != 0 && len(adds) > 0 && len(have) == 0 {
		first := adds[0]
		err := x.batch([]req{{typ: msgNewSA, sa: &first}})
		if err == nil {
			// A device without ESP offload takes the SA in software and
			// says nothing: the dump tells.
			err = x.offloaded(c.Reqid, first)
			if err != nil && c.Offload == OffloadRequired {
				x.batch([]req{{typ: msgDelSA, payload: usersaID(first.dst, first.spi), what: "delete SA", tolerate: unix.ESRCH}})
			}
			if err != nil && c.Offload != OffloadRequired {
				rep.Added++ // kept, in software
				adds = adds[1:]
			}
		}
		if err != nil {
			if errors.Is(err, unix.EINVAL) {
				err = fmt.Errorf("%w (a device must offload ESN sequence numbers, which railnet uses: the kernel asks its driver to advance them)", err)
			}
			if c.Offload == OffloadRequired {
				return rep, fmt.Errorf("%w: %v", ErrOffload, err)
			}
			rep.OffloadRefused = err
			for i := range adds {
				adds[i].offload = 0
			}
		} else {
			rep.Offloaded = true
			adds = adds[1:]
			rep.Added++
		}
	}
	reqs := make([]req, len(adds))
	for i := range adds {
		reqs[i] = req{typ: msgNewSA, sa: &adds[i]}
	}
	err = x.batch(reqs)
	if err != nil {
		return rep, err
	}
	rep.Added += len(reqs)
	// Sequences: an outbound SA never behind the current epoch, an
	// inbound one's window not two epochs behind (see docs/encryption.md).
	floor := epochFloor(now)
	var aes []req
	for k, s := range haveBy {
		w, ok := want[k]
		if !ok {
			continue
		}
		switch {
		case w.outbound && s.oseq < floor:
			w.seq = floor
		case !w.outbound && s.seq < floor && s.seq>>32 < floor>>32-1:
			w.seq = floor
		default:
			continue
		}
		aes = append(aes, req{typ: msgNewAE, flags: unix.NLM_F_REPLACE, payload: w.newAE(), what: fmt.Sprintf("sequence of SA spi %#x", w.spi)})
	}
	if err := x.batch(aes); err != nil {
		return rep, err
	}
	rep.Advanced = len(aes)
	var pols []req
	for _, p := range c.policies() {
		pols = append(pols, req{typ: msgUpdPolicy, payload: p.upd(), what: "policy"})
	}
	if err := x.batch(pols); err != nil {
		return rep, err
	}
	var dels []req
	for k := range haveBy {
		if _, ok := want[k]; !ok {
			dels = append(dels, req{typ: msgDelSA, payload: usersaID(k.dst, k.spi), what: "delete SA", tolerate: unix.ESRCH})
		}
	}
	if err := x.batch(dels); err != nil {
		return rep, err
	}
	rep.Removed = len(dels)
	return rep, nil
}

// offloaded says why the SA s is not offloaded (nil: it is).
func (x *conn) offloaded(reqid uint32, s sa) error {
	have, err := x.dumpStates(reqid)
	if err != nil {
		return err
	}
	for _, h := range have {
		if h.dst == s.dst && h.spi == s.spi {
			if h.offload {
				return nil
			}
			return errors.New("the kernel took the SA in software: the device has no ESP offload")
		}
	}
	return errors.New("the SA is not installed")
}

// Remove deletes this attachment's policies and states. Missing ones are
// fine: DEL runs twice, and after a crash.
func (c IPsec) Remove(ns netns.NsHandle) error {
	x, err := dial(ns)
	if err != nil {
		return err
	}
	defer x.Close()
	var reqs []req
	for _, p := range c.policies() {
		reqs = append(reqs, req{typ: msgDelPolicy, payload: p.id(), what: "delete policy", tolerate: unix.ENOENT})
	}
	perr := x.batch(reqs)
	have, err := x.dumpStates(c.Reqid)
	if err != nil {
		return errors.Join(perr, fmt.Errorf("list SAs: %w", err))
	}
	reqs = reqs[:0]
	for _, s := range have {
		reqs = append(reqs, req{typ: msgDelSA, payload: usersaID(s.dst, s.spi), what: "delete SA", tolerate: unix.ESRCH})
	}
	return errors.Join(perr, x.batch(reqs))
}

// Check verifies that every SA and policy Sync would want is there.
func (c IPsec) Check(ns netns.NsHandle, set *keys.Set, now time.Time) error {
	x, err := dial(ns)
	if err != nil {
		return err
	}
	defer x.Close()
	have, err := x.dumpStates(c.Reqid)
	if err != nil {
		return fmt.Errorf("list SAs: %w", err)
	}
	haveBy := map[saKey]bool{}
	for _, s := range have {
		haveBy[saKey{s.dst, s.spi}] = true
	}
	want, _, _ := c.desired(set, now, 0)
	missing := 0
	var example string
	for k, s := range want {
		if !haveBy[k] {
			missing++
			example = fmt.Sprintf("%s→%s spi %#x", s.src, s.dst, s.spi)
		}
	}
	if missing > 0 {
		return fmt.Errorf("%d of %d SAs missing (e.g. %s)", missing, len(want), example)
	}
	for _, p := range c.policies() {
		ok, err := x.getPolicy(p)
		if err != nil {
			return fmt.Errorf("policy: %w", err)
		}
		if !ok {
			return fmt.Errorf("the %s policy for %s is missing", map[uint8]string{policyIn: "inbound", policyOut: "outbound"}[p.dir], p.sel.dst)
		}
	}
	return nil
}

// IsNotSupported reports whether err says the kernel lacks ESP or its
// algorithm (no esp4/esp6, no gcm).
func IsNotSupported(err error) bool {
	var errno syscall.Errno
	return errors.As(err, &errno) && (errno == unix.ENOSYS || errno == unix.EPROTONOSUPPORT || errno == unix.ENOPROTOOPT)
}

// SA is what Counters reports of one SA.
type SA struct {
	Src, Dst netip.Addr
	SPI      uint32
	Packets  uint64
	Offload  bool
}

// SAs lists the attachment's SAs with their packet counters (tests,
// railnetctl).
func (c IPsec) SAs(ns netns.NsHandle) ([]SA, error) {
	x, err := dial(ns)
	if err != nil {
		return nil, err
	}
	defer x.Close()
	have, err := x.dumpStates(c.Reqid)
	if err != nil {
		return nil, err
	}
	out := make([]SA, 0, len(have))
	for _, s := range have {
		out = append(out, SA{Src: s.src, Dst: s.dst, SPI: s.spi, Packets: s.packets, Offload: s.offload})
	}
	return out, nil
}

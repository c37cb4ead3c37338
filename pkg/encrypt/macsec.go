package encrypt

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/railnet/railnet/pkg/keys"
	"github.com/railnet/railnet/pkg/macsec"
	"github.com/railnet/railnet/pkg/netdev"
	"github.com/railnet/railnet/pkg/state"
)

// MACsec is one attachment's MACsec configuration: a macsec link named
// Name (CNI_IFNAME, carrying the addresses) on the pod's device, renamed
// Lower. Every member of the subnet has a receive channel whose SCI comes
// from its address; each key id is an association (AN = id mod 4) with the
// key's SAK, salt and key identifier, and with XPN each sender's SSCI is
// its host index, so no two senders share a nonce.
type MACsec struct {
	Local  netip.Addr
	Subnet netip.Prefix
	Name   string
	Lower  string
	Alias  string
}

// MACsecFromRecord is the MACsec configuration an attachment record
// describes; ifName is the attachment's CNI_IFNAME.
func MACsecFromRecord(e *state.Encryption, ifName string) MACsec {
	local, _ := netip.ParseAddr(e.Local)
	subnet, _ := netip.ParsePrefix(e.Subnet)
	return MACsec{Local: local, Subnet: subnet, Name: ifName, Lower: e.MACsec.Lower, Alias: e.MACsec.Alias}
}

// AN is the association number of key id.
func AN(id uint8) uint8 { return id % 4 }

// CheckMACsecKeys refuses a key file MACsec cannot use: mixed algorithms
// (the cipher suite is the link's), or two ids on one association number.
func CheckMACsecKeys(set *keys.Set) error {
	seen := map[uint8]uint8{}
	for _, k := range set.Keys {
		if k.Algorithm != set.Keys[0].Algorithm {
			return fmt.Errorf("%w: MACsec needs one algorithm for all keys of a file (key %d is %s, key %d %s)", keys.ErrInvalid, set.Keys[0].ID, set.Keys[0].Algorithm, k.ID, k.Algorithm)
		}
		if o, ok := seen[AN(k.ID)]; ok {
			return fmt.Errorf("%w: MACsec association numbers are key id mod 4: keys %d and %d would share one", keys.ErrInvalid, o, k.ID)
		}
		seen[AN(k.ID)] = k.ID
	}
	return nil
}

func cipherOf(set *keys.Set) uint64 {
	if set.Keys[0].Algorithm == "aes-gcm-256" {
		return macsec.CipherGCMAESXPN256
	}
	return macsec.CipherGCMAESXPN128
}

func (m MACsec) sa(k keys.Key, ssci uint32, pn uint64) macsec.SA {
	s := macsec.SA{AN: AN(k.ID), PN: pn, Key: keys.MACsecSAK(k), SSCI: ssci, Active: true}
	copy(s.KeyID[:], keys.MACsecKeyID(k))
	copy(s.Salt[:], keys.MACsecSalt(k))
	return s
}

// Create renames the pod's device (down, named Name) to Lower and makes
// the macsec link Name on it, down, with the sender's association as its
// encoding SA; the lower comes up. It returns the macsec link's ifindex.
func (m MACsec) Create(pod *netdev.Namespace, set *keys.Set, now time.Time) (int, error) {
	sender, ok := set.Sender(now)
	if !ok {
		return 0, fmt.Errorf("%w: no key may send yet (every sendAfter is ahead)", keys.ErrInvalid)
	}
	lower, err := pod.Handle.LinkByName(m.Name)
	if err != nil {
		return 0, fmt.Errorf("find %s: %w", m.Name, err)
	}
	if err := pod.Handle.LinkSetName(lower, m.Lower); err != nil {
		return 0, fmt.Errorf("rename %s to %s: %w", m.Name, m.Lower, err)
	}
	x, err := dialProto(pod.NS, unix.NETLINK_ROUTE)
	if err != nil {
		return 0, err
	}
	defer x.Close()
	link := macsec.Link{Name: m.Name, Lower: lower.Attrs().Index, SCI: keys.SCI(m.Local), Cipher: cipherOf(set),
		EncodingSA: AN(sender.ID), Window: replayWindow}
	if err := x.batch([]req{{typ: unix.RTM_NEWLINK, flags: unix.NLM_F_CREATE | unix.NLM_F_EXCL, payload: macsec.NewLink(link), what: "macsec link " + m.Name}}); err != nil {
		return 0, err
	}
	l, err := pod.Handle.LinkByName(m.Name)
	if err != nil {
		return 0, fmt.Errorf("find the macsec link: %w", err)
	}
	if err := pod.Handle.LinkSetAlias(l, m.Alias); err != nil {
		return 0, fmt.Errorf("alias of the macsec link: %w", err)
	}
	if err := pod.Handle.LinkSetUp(lower); err != nil {
		return 0, fmt.Errorf("set %s up: %w", m.Lower, err)
	}
	return l.Attrs().Index, nil
}

// Sync makes the link's channels and associations what the keys say at
// now, from what prev says is installed (nil: nothing yet): a receive
// channel per peer, a receive association per peer and key id, a transmit
// association for the sender, which is also the encoding SA; new ones
// before old ones go. At a new epoch packet numbers move up.
func (m MACsec) Sync(pod *netdev.Namespace, ifindex int, set *keys.Set, now time.Time, prev *state.MACsec) (state.MACsec, Report, error) {
	var rep Report
	next := state.MACsec{Lower: m.Lower, Alias: m.Alias, IfIndex: ifindex}
	if err := CheckMACsecKeys(set); err != nil {
		return next, rep, err
	}
	if prev != nil {
		next.KeyIDs, next.Sender, next.Epoch = prev.KeyIDs, prev.Sender, prev.Epoch
	}
	sender, ok := set.Sender(now)
	if !ok {
		return next, rep, fmt.Errorf("%w: no key may send yet", keys.ErrInvalid)
	}
	fam, err := netlink.GenlFamilyGet(macsec.FamilyName)
	if err != nil {
		return next, rep, fmt.Errorf("the macsec generic-netlink family: %w", err)
	}
	g, err := dialProto(pod.NS, unix.NETLINK_GENERIC)
	if err != nil {
		return next, rep, err
	}
	defer g.Close()
	cmd := func(payload []byte, what string, tolerate syscall.Errno) req {
		return req{typ: fam.ID, payload: payload, what: what, tolerate: tolerate}
	}
	peers := Peers(m.Subnet, m.Local)
	floor := epochFloor(now)
	var reqs []req
	fresh := prev == nil
	if fresh {
		for _, p := range peers {
			reqs = append(reqs, cmd(macsec.AddRXSC(ifindex, keys.SCI(p)), "receive channel of "+p.String(), 0))
		}
	}
	have := map[uint8]bool{}
	for _, id := range next.KeyIDs {
		have[id] = true
	}
	for _, k := range set.Keys {
		if have[k.ID] {
			continue
		}
		for _, p := range peers {
			reqs = append(reqs, cmd(macsec.AddRXSA(ifindex, keys.SCI(p), m.sa(k, keys.SSCI(Index(m.Subnet, p)), floor)),
				fmt.Sprintf("receive SA %d of %s", AN(k.ID), p), 0))
		}
		rep.Added += len(peers)
	}
	if fresh || next.Sender != sender.ID {
		reqs = append(reqs, cmd(macsec.AddTXSA(ifindex, m.sa(sender, keys.SSCI(Index(m.Subnet, m.Local)), keys.StartSequence(now))), "transmit SA", 0))
		rep.Added++
	}
	err = g.batch(reqs)
	for _, r := range reqs {
		clear(r.payload)
	}
	if err != nil {
		return next, rep, err
	}
	if fresh || next.Sender != sender.ID {
		x, err := dialProto(pod.NS, unix.NETLINK_ROUTE)
		if err != nil {
			return next, rep, err
		}
		err = x.batch([]req{{typ: unix.RTM_NEWLINK, payload: macsec.SetEncodingSA(ifindex, AN(sender.ID)), what: "encoding SA"}})
		x.Close()
		if err != nil {
			return next, rep, err
		}
	}
	// Old associations: the sender's previous one, and removed key ids.
	// The kernel deletes only inactive associations: each is made
	// inactive first, in the same batch.
	var dels []req
	if !fresh && next.Sender != sender.ID {
		dels = append(dels, cmd(macsec.DeactivateTXSA(ifindex, AN(next.Sender)), "deactivate transmit SA", unix.ENODEV),
			cmd(macsec.DelTXSA(ifindex, AN(next.Sender)), "delete transmit SA", unix.ENODEV))
	}
	ids := set.IDs()
	for _, id := range next.KeyIDs {
		if slices.Contains(ids, id) {
			continue
		}
		for _, p := range peers {
			dels = append(dels, cmd(macsec.DeactivateRXSA(ifindex, keys.SCI(p), AN(id)), "deactivate receive SA", unix.ENODEV),
				cmd(macsec.DelRXSA(ifindex, keys.SCI(p), AN(id)), "delete receive SA", unix.ENODEV))
		}
		rep.Removed += len(peers)
	}
	if !fresh && next.Sender != sender.ID {
		rep.Removed++
	}
	if err := g.batch(dels); err != nil {
		return next, rep, err
	}
	// A new epoch: packet numbers up to its start (transmit), windows too
	// (receive), as for ESP's sequences.
	if !fresh && next.Epoch < floor>>32 {
		var ups []req
		ups = append(ups, cmd(macsec.UpdTXSA(ifindex, AN(sender.ID), floor), "transmit packet number", 0))
		for _, k := range set.Keys {
			for _, p := range peers {
				ups = append(ups, cmd(macsec.UpdRXSA(ifindex, keys.SCI(p), AN(k.ID), floor), "receive packet number", unix.ENODEV))
			}
		}
		if err := g.batch(ups); err != nil {
			return next, rep, err
		}
		rep.Advanced = len(ups)
	}
	next.KeyIDs, next.Sender, next.Epoch = ids, sender.ID, floor>>32
	rep.Sender, rep.Receiving = sender.ID, ids
	return next, rep, nil
}

// Remove deletes the macsec link (found by its alias, whatever it is
// called now) and gives the lower its name back. Missing is fine.
func (m MACsec) Remove(pod *netdev.Namespace) error {
	err := netdev.DeleteChild(nil, pod, m.Alias, "")
	if l, lerr := pod.Handle.LinkByName(m.Lower); lerr == nil {
		if rerr := pod.Handle.LinkSetDown(l); rerr == nil {
			pod.Handle.LinkSetName(l, m.Name)
		}
	}
	return err
}

// Check verifies the macsec link is there, is a macsec link on the lower,
// and that the lower is there.
func (m MACsec) Check(pod *netdev.Namespace) error {
	l, err := netdev.FindChild(pod, m.Alias, "")
	if err != nil {
		return fmt.Errorf("the macsec link is missing: %w", err)
	}
	if l.Type() != "macsec" {
		return fmt.Errorf("%s is a %s link, not macsec", l.Attrs().Name, l.Type())
	}
	lower, err := pod.Handle.LinkByName(m.Lower)
	if err != nil {
		return fmt.Errorf("the macsec link's lower %s is missing: %w", m.Lower, err)
	}
	if l.Attrs().ParentIndex != lower.Attrs().Index {
		return errors.New("the macsec link is not on its lower device any more")
	}
	return nil
}

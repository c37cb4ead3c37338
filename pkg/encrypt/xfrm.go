package encrypt

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"syscall"

	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// XFRM netlink, written here: an attachment installs two SAs per peer and
// key, a /22 some two thousand, and netlink's library sends one message
// per call and cannot set an SA's starting ESN sequence. These builders
// lay the kernel's structures out (uapi/linux/xfrm.h) and a batch sends
// many messages per sendmsg.

const (
	msgNewSA     = 0x10
	msgDelSA     = 0x11
	msgGetSA     = 0x12
	msgDelPolicy = 0x14
	msgGetPolicy = 0x15
	msgUpdPolicy = 0x19
	msgNewAE     = 0x1e

	attrAlgAEAD    = 18 // XFRMA_ALG_AEAD
	attrTmpl       = 5  // XFRMA_TMPL
	attrReplayESN  = 23 // XFRMA_REPLAY_ESN_VAL
	attrOffloadDev = 28 // XFRMA_OFFLOAD_DEV

	stateESN        = 128 // XFRM_STATE_ESN
	modeTransport   = 0
	policyIn        = 0
	policyOut       = 1
	policyAllow     = 0
	offloadInbound  = 2 // XFRM_OFFLOAD_INBOUND
	offloadIPv6     = 1 // XFRM_OFFLOAD_IPV6
	replayWindow    = 128
	replayBmpWords  = replayWindow / 32
	sizeofSelector  = 56
	sizeofUsersaID  = 24
	sizeofSAInfo    = 224
	sizeofPolicyID  = 64
	sizeofPolicy    = 168
	sizeofTmpl      = 64
	sizeofAeventID  = 48
	sizeofReplayESN = 24 + 4*replayBmpWords
)

var ne = binary.NativeEndian

func family(a netip.Addr) uint16 {
	if a.Is4() {
		return unix.AF_INET
	}
	return unix.AF_INET6
}

// xaddr is xfrm_address_t: IPv4 in the first 4 bytes.
func xaddr(b []byte, a netip.Addr) {
	if a.Is4() {
		v := a.As4()
		copy(b, v[:])
		return
	}
	v := a.As16()
	copy(b, v[:])
}

func parseXaddr(b []byte, fam uint16) netip.Addr {
	if fam == unix.AF_INET {
		return netip.AddrFrom4([4]byte(b[:4]))
	}
	return netip.AddrFrom16([16]byte(b[:16]))
}

// selector is struct xfrm_selector.
type selector struct {
	dst, src       netip.Prefix
	ifindex, proto int
}

func (s selector) put(b []byte) {
	xaddr(b[0:16], s.dst.Addr())
	xaddr(b[16:32], s.src.Addr())
	ne.PutUint16(b[40:42], family(s.dst.Addr()))
	b[42], b[43] = uint8(s.dst.Bits()), uint8(s.src.Bits())
	b[44] = uint8(s.proto)
	ne.PutUint32(b[48:52], uint32(int32(s.ifindex)))
}

// lifetimeInf fills xfrm_lifetime_cfg with "no limit": the byte and
// packet limits at XFRM_INF; the expiry times stay 0, which is "never"
// (all ones would be a time long past).
func lifetimeInf(b []byte) {
	for i := 0; i < 32; i++ {
		b[i] = 0xff
	}
}

func attr(typ uint16, payload []byte) []byte {
	l := 4 + len(payload)
	b := make([]byte, nlAlign(l))
	ne.PutUint16(b[0:2], uint16(l))
	ne.PutUint16(b[2:4], typ)
	copy(b[4:], payload)
	return b
}

func nlAlign(n int) int { return (n + 3) &^ 3 }

// sa is one ESP state in transport mode.
type sa struct {
	src, dst netip.Addr
	spi      uint32
	reqid    uint32
	material []byte // AES key and the 4-byte salt
	seq      uint64 // outbound: the first sequence number (ESN); inbound: the replay window's top
	outbound bool
	offload  int // ifindex to offload to, 0: software
}

// newSA is XFRM_MSG_NEWSA's payload: xfrm_usersa_info, the AEAD
// rfc4106(gcm(aes)) with a 16-byte ICV, the ESN replay state, offload.
func (s *sa) newSA() []byte { return s.appendNewSA(nil) }

// appendNewSA appends newSA's payload to b, with no allocation of its own
// when b has room: a /22 attachment lays out two thousand of them.
func (s *sa) appendNewSA(b []byte) []byte {
	at := len(b)
	b = append(b, make([]byte, sizeofSAInfo)...)
	u := b[at:]
	// sel: left empty (any), family set.
	ne.PutUint16(u[40:42], family(s.dst))
	// id: daddr, spi (network order), proto ESP.
	xaddr(u[56:72], s.dst)
	binary.BigEndian.PutUint32(u[72:76], s.spi)
	u[76] = unix.IPPROTO_ESP
	xaddr(u[80:96], s.src)
	lifetimeInf(u[96:160])
	// curlft 160:192, stats 192:204, seq 204
	ne.PutUint32(u[208:212], s.reqid)
	ne.PutUint16(u[212:214], family(s.dst))
	u[214] = modeTransport
	u[215] = 0 // replay_window: in the ESN state
	u[216] = stateESN
	// XFRMA_ALG_AEAD: xfrm_algo_aead (name[64], key bits, ICV bits, key).
	b, a := appendAttr(b, attrAlgAEAD, 72+len(s.material))
	copy(a, "rfc4106(gcm(aes))")
	ne.PutUint32(a[64:68], uint32(len(s.material)*8))
	ne.PutUint32(a[68:72], 128)
	copy(a[72:], s.material)
	b, a = appendAttr(b, attrReplayESN, sizeofReplayESN)
	s.putReplay(a)
	if s.offload != 0 {
		b, a = appendAttr(b, attrOffloadDev, 8)
		ne.PutUint32(a[0:4], uint32(s.offload))
		var flags uint8
		if !s.outbound {
			flags |= offloadInbound
		}
		if s.dst.Is6() {
			flags |= offloadIPv6
		}
		a[4] = flags
	}
	return b
}

// appendAttr appends an attribute of n zero bytes (aligned) and returns
// them to fill in.
func appendAttr(b []byte, typ uint16, n int) ([]byte, []byte) {
	at := len(b)
	b = append(b, make([]byte, nlAlign(4+n))...)
	ne.PutUint16(b[at:at+2], uint16(4+n))
	ne.PutUint16(b[at+2:at+4], typ)
	return b, b[at+4 : at+4+n]
}

// replay is xfrm_replay_state_esn with a zero bitmap.
func (s *sa) replay() []byte {
	r := make([]byte, sizeofReplayESN)
	s.putReplay(r)
	return r
}

func (s *sa) putReplay(r []byte) {
	ne.PutUint32(r[0:4], replayBmpWords)
	if s.outbound {
		ne.PutUint32(r[4:8], uint32(s.seq))       // oseq
		ne.PutUint32(r[12:16], uint32(s.seq>>32)) // oseq_hi
	} else {
		ne.PutUint32(r[8:12], uint32(s.seq))      // seq
		ne.PutUint32(r[16:20], uint32(s.seq>>32)) // seq_hi
	}
	ne.PutUint32(r[20:24], replayWindow)
}

// usersaID is xfrm_usersa_id: how DELSA names a state.
func usersaID(dst netip.Addr, spi uint32) []byte {
	b := make([]byte, sizeofUsersaID)
	xaddr(b[0:16], dst)
	binary.BigEndian.PutUint32(b[16:20], spi)
	ne.PutUint16(b[20:22], family(dst))
	b[22] = unix.IPPROTO_ESP
	return b
}

// newAE moves an SA's sequence forward (XFRM_MSG_NEWAE, NLM_F_REPLACE).
func (s *sa) newAE() []byte {
	b := make([]byte, sizeofAeventID)
	copy(b[0:24], usersaID(s.dst, s.spi))
	xaddr(b[24:40], s.src)
	ne.PutUint32(b[44:48], s.reqid)
	return append(b, attr(attrReplayESN, s.replay())...)
}

// policy is one transport-mode policy: ESP required (with tmpl), or allow
// (no tmpl).
type policy struct {
	sel      selector
	dir      uint8
	priority uint32
	reqid    uint32 // 0: an allow policy without template
}

func (p policy) upd() []byte {
	b := make([]byte, sizeofPolicy)
	p.sel.put(b[0:56])
	lifetimeInf(b[56:120])
	ne.PutUint32(b[152:156], p.priority)
	b[160] = p.dir
	b[161] = policyAllow
	if p.reqid == 0 {
		return b
	}
	t := make([]byte, sizeofTmpl)
	t[20] = unix.IPPROTO_ESP // id.proto, after daddr and spi
	ne.PutUint16(t[24:26], family(p.sel.dst.Addr()))
	ne.PutUint32(t[44:48], p.reqid)
	t[48] = modeTransport
	t[50] = 0 // optional: no, ESP is required
	ne.PutUint32(t[52:56], 0xffffffff)
	ne.PutUint32(t[56:60], 0xffffffff)
	ne.PutUint32(t[60:64], 0xffffffff)
	return append(b, attr(attrTmpl, t)...)
}

func (p policy) id() []byte {
	b := make([]byte, sizeofPolicyID)
	p.sel.put(b[0:56])
	b[60] = p.dir
	return b
}

// conn is an XFRM netlink socket in a namespace.
type conn struct {
	s   *nl.NetlinkSocket
	seq uint32
}

func dial(ns netns.NsHandle) (*conn, error) { return dialProto(ns, unix.NETLINK_XFRM) }

// dialProto is a netlink socket of protocol proto in a namespace, for
// batches.
func dialProto(ns netns.NsHandle, proto int) (*conn, error) {
	s, err := nl.GetNetlinkSocketAt(ns, netns.None(), proto)
	if err != nil {
		return nil, fmt.Errorf("netlink (protocol %d): %w", proto, err)
	}
	// Room for a batch's acknowledgements (root may exceed rmem_max).
	if unix.SetsockoptInt(s.GetFd(), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 4<<20) != nil {
		unix.SetsockoptInt(s.GetFd(), unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20)
	}
	return &conn{s: s}, nil
}

func (c *conn) Close() { c.s.Close() }

// batchMax bounds one sendmsg (below the socket's send buffer; the last
// message may pass it by its own length), batchMsgs the messages in it:
// each answer costs the receive buffer an skb's truesize, not its 36 bytes.
const (
	batchMax  = 60 << 10
	batchMsgs = 256
)

// req is one message of a batch and what to call it in errors.
type req struct {
	typ, flags uint16
	payload    []byte
	sa         *sa // XFRM_MSG_NEWSA of this SA, laid out in the batch (payload nil)
	what       string
	tolerate   syscall.Errno // an errno that counts as done (ENOENT for deletes)
}

func (r *req) name() string {
	if r.sa != nil {
		return fmt.Sprintf("SA %s→%s spi %#x", r.sa.src, r.sa.dst, r.sa.spi)
	}
	return r.what
}

// batch sends the requests, many per sendmsg, and returns the first error
// by request. The kernel handles a sendmsg's messages in order before it
// returns, and answers every failed one; only the last of each sendmsg
// asks for an acknowledgement of success, so when that one is answered
// every error of the sendmsg has been too (two thousand acknowledgements
// were a tenth of an encrypted ADD).
func (c *conn) batch(reqs []req) error {
	var firstErr error
	buf := make([]byte, 0, batchMax+4<<10)
	defer func() { clear(buf[:cap(buf)]) }()
	for start := 0; start < len(reqs); {
		buf = buf[:0]
		first := c.seq + 1
		end := start
		for ; end < len(reqs) && end-start < batchMsgs && len(buf) < batchMax; end++ {
			r := &reqs[end]
			c.seq++
			at := len(buf)
			buf = append(buf, make([]byte, 16)...)
			if r.sa != nil {
				buf = r.sa.appendNewSA(buf)
			} else {
				buf = append(buf, r.payload...)
			}
			l := len(buf) - at
			buf = append(buf, make([]byte, nlAlign(l)-l)...)
			flags := r.flags | unix.NLM_F_REQUEST
			if end+1 == len(reqs) || end+1-start == batchMsgs || len(buf) >= batchMax {
				flags |= unix.NLM_F_ACK
			}
			ne.PutUint32(buf[at:at+4], uint32(l))
			ne.PutUint16(buf[at+4:at+6], r.typ)
			ne.PutUint16(buf[at+6:at+8], flags)
			ne.PutUint32(buf[at+8:at+12], c.seq)
		}
		last := c.seq
		err := unix.Sendto(c.s.GetFd(), buf, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
		if err != nil {
			return fmt.Errorf("xfrm sendmsg: %w", err)
		}
		for done := false; !done; {
			msgs, _, err := c.s.Receive()
			if err != nil {
				return fmt.Errorf("xfrm acknowledgements: %w", err)
			}
			for _, m := range msgs {
				seq := m.Header.Seq
				if m.Header.Type != unix.NLMSG_ERROR || seq < first || seq > last {
					continue
				}
				r := &reqs[start+int(seq-first)]
				if errno := -int32(ne.Uint32(m.Data[0:4])); errno != 0 && syscall.Errno(errno) != r.tolerate && firstErr == nil {
					firstErr = fmt.Errorf("%s: %w", r.name(), syscall.Errno(errno))
				}
				done = done || seq == last
			}
		}
		start = end
	}
	return firstErr
}

// saState is what a dump says about an SA.
type saState struct {
	src, dst netip.Addr
	spi      uint32
	reqid    uint32
	oseq     uint64 // outbound sequence so far
	seq      uint64 // inbound: the replay window's top
	offload  bool
	packets  uint64 // processed so far (curlft)
}

// dumpStates lists every ESP state of the namespace with reqid.
func (c *conn) dumpStates(reqid uint32) ([]saState, error) {
	c.seq++
	h := make([]byte, 16)
	ne.PutUint32(h[0:4], uint32(len(h)))
	ne.PutUint16(h[4:6], msgGetSA)
	ne.PutUint16(h[6:8], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	ne.PutUint32(h[8:12], c.seq)
	if err := unix.Sendto(c.s.GetFd(), h, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, err
	}
	var out []saState
	for {
		msgs, _, err := c.s.Receive()
		if err != nil {
			return nil, err
		}
		for _, m := range msgs {
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				return out, nil
			case unix.NLMSG_ERROR:
				if errno := -int32(ne.Uint32(m.Data[0:4])); errno != 0 {
					return nil, syscall.Errno(errno)
				}
				return out, nil
			case msgNewSA:
				d := m.Data
				if len(d) < sizeofSAInfo {
					continue
				}
				fam := ne.Uint16(d[212:214])
				st := saState{dst: parseXaddr(d[56:72], fam), spi: binary.BigEndian.Uint32(d[72:76]), src: parseXaddr(d[80:96], fam),
					reqid: ne.Uint32(d[208:212]), packets: ne.Uint64(d[168:176])}
				if st.reqid != reqid || d[76] != unix.IPPROTO_ESP {
					continue
				}
				for a := d[nlAlign(sizeofSAInfo):]; len(a) >= 4; {
					l, t := int(ne.Uint16(a[0:2])), ne.Uint16(a[2:4])&0x3fff
					if l < 4 || l > len(a) {
						break
					}
					switch t {
					case attrReplayESN:
						if l >= 4+24 {
							r := a[4:]
							st.oseq = uint64(ne.Uint32(r[12:16]))<<32 | uint64(ne.Uint32(r[4:8]))
							st.seq = uint64(ne.Uint32(r[16:20]))<<32 | uint64(ne.Uint32(r[8:12]))
						}
					case attrOffloadDev:
						st.offload = true
					}
					a = a[min(nlAlign(l), len(a)):]
				}
				out = append(out, st)
			}
		}
	}
}

// getPolicy reports whether the policy exists.
func (c *conn) getPolicy(p policy) (bool, error) {
	err := c.batch([]req{{typ: msgGetPolicy, payload: p.id(), what: "policy"}})
	var errno syscall.Errno
	if errors.As(err, &errno) && errno == unix.ENOENT {
		return false, nil
	}
	return err == nil, err
}

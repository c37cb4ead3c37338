package discovery

import (
	"archive/tar"
	"compress/gzip"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/railnet/railnet/pkg/sysfs"
)

// Snapshot files: what discovery reads, and a little more that helps a bug
// report (link speeds, firmware versions). Everything else in a device
// directory (config space, resources, power, statistics) is left out.
var (
	snapPCIFiles = set("vendor", "device", "class", "subsystem_vendor", "subsystem_device", "revision",
		"numa_node", "local_cpulist", "local_cpus", "modalias", "sriov_totalvfs", "sriov_numvfs",
		"sriov_offset", "sriov_stride", "sriov_vf_device", "sriov_drivers_autoprobe",
		"secondary_bus_number", "subordinate_bus_number", "current_link_speed", "current_link_width",
		"max_link_speed", "max_link_width")
	snapNetFiles = set("address", "addr_len", "broadcast", "type", "mtu", "operstate", "carrier", "speed",
		"duplex", "ifindex", "iflink", "dev_id", "dev_port", "phys_port_name", "phys_switch_id")
	snapRDMAFiles = set("node_type", "node_guid", "sys_image_guid", "hca_type", "fw_ver", "board_id", "parent",
		"link_layer", "state", "phys_state", "rate", "lid", "sm_lid", "0", "ibdev", "abi_version", "port")
	// Subdirectories descended into below a device; gids and pkeys keep entry 0 only.
	snapSubdirs = set("net", "infiniband", "infiniband_verbs", "infiniband_mad", "ports", "gids", "gid_attrs",
		"ndevs", "types", "pkeys", "pci_bus")
	snapLinks = set("driver", "physfn", "device")
)

func set(s ...string) map[string]bool {
	m := make(map[string]bool, len(s))
	for _, x := range s {
		m[x] = true
	}
	return m
}

// WriteSnapshot writes a gzip-compressed tar of the sysfs (and devfs, when
// dev is not nil) files railnet reads, as sys/... and dev/..., so that
// `--sysfs-root X/sys --devfs-root X/dev` on the unpacked archive shows the
// same inventory and topology. It holds no secrets: IDs, names, MACs, GUIDs.
func WriteSnapshot(sys, dev *sysfs.FS, w io.Writer) error {
	gz := gzip.NewWriter(w)
	tw := tar.NewWriter(gz)
	s := &snapshot{fs: sys, tw: tw, prefix: "sys", dirs: map[string]bool{}, now: time.Now()}

	// Host bridges wherever they hang (pci0000:00 at the top, below VMBus
	// on Hyper-V, below platform devices on ARM): found from the devices.
	devs, _, err := sys.ReadLinks("bus/pci/devices")
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	hostBridges := map[string]bool{}
	for _, real := range devs {
		elems := strings.Split(real, "/")
		for i, e := range elems {
			if isHostBridge(e) {
				hostBridges[strings.Join(elems[:i+1], "/")] = true
				break
			}
		}
	}
	hbs := make([]string, 0, len(hostBridges))
	for hb := range hostBridges {
		hbs = append(hbs, hb)
	}
	slices.Sort(hbs)
	for _, hb := range hbs {
		s.deviceTree(hb)
	}
	for _, d := range []string{"devices/virtual/net", "devices/virtual/infiniband", "devices/virtual/infiniband_verbs"} {
		s.deviceTree(d)
	}
	for _, f := range []string{"devices/system/node/online", "devices/system/node/possible",
		"devices/system/cpu/online", "devices/system/cpu/possible", "devices/system/cpu/present",
		"class/infiniband_verbs/abi_version", "class/infiniband_mad/abi_version"} {
		s.file(f)
	}
	if nodes, err := sys.ReadDirents("devices/system/node"); err == nil {
		for _, n := range nodes {
			if strings.HasPrefix(n.Name, "node") {
				s.file("devices/system/node/" + n.Name + "/cpulist")
				s.file("devices/system/node/" + n.Name + "/cpumap")
			}
		}
	}
	for _, d := range []string{"bus/pci/devices", "class/net", "class/infiniband", "class/infiniband_verbs", "class/infiniband_mad", "class/pci_bus"} {
		s.links(d)
	}
	if drivers, err := sys.ReadDirents("bus/pci/drivers"); err == nil {
		for _, d := range drivers {
			s.dir("bus/pci/drivers/" + d.Name)
		}
	}
	if dev != nil && s.err == nil {
		ds := &snapshot{fs: dev, tw: tw, prefix: "dev", dirs: map[string]bool{}, now: s.now}
		if ents, err := dev.ReadDirents("infiniband"); err == nil {
			for _, e := range ents {
				ds.empty("infiniband/" + e.Name)
			}
		}
		if ents, err := dev.ReadDirents("."); err == nil {
			for _, e := range ents {
				if strings.HasPrefix(e.Name, "nvidia") {
					ds.empty(e.Name)
				}
			}
		}
		s.err = ds.err
	}
	if s.err != nil {
		return s.err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return gz.Close()
}

type snapshot struct {
	fs     *sysfs.FS
	tw     *tar.Writer
	prefix string
	dirs   map[string]bool
	now    time.Time
	err    error
}

func (s *snapshot) header(h *tar.Header) {
	if s.err != nil {
		return
	}
	h.ModTime = s.now
	h.Name = path.Join(s.prefix, h.Name)
	if h.Typeflag == tar.TypeDir {
		h.Name += "/"
	}
	s.err = s.tw.WriteHeader(h)
}

func (s *snapshot) dir(rel string) {
	if rel == "." || rel == "" || s.dirs[rel] {
		return
	}
	s.dir(path.Dir(rel))
	s.dirs[rel] = true
	s.header(&tar.Header{Typeflag: tar.TypeDir, Name: rel, Mode: 0o755})
}

func (s *snapshot) file(rel string) {
	b, err := s.fs.ReadFile(rel)
	if err != nil {
		return // not there, or unreadable (speed of a down link): left out
	}
	s.dir(path.Dir(rel))
	s.header(&tar.Header{Typeflag: tar.TypeReg, Name: rel, Mode: 0o444, Size: int64(len(b))})
	if s.err == nil {
		_, s.err = s.tw.Write(b)
	}
}

func (s *snapshot) empty(rel string) {
	s.dir(path.Dir(rel))
	s.header(&tar.Header{Typeflag: tar.TypeReg, Name: rel, Mode: 0o666})
}

func (s *snapshot) link(rel string) {
	t, err := s.fs.Readlink(rel)
	if err != nil || strings.HasPrefix(t, "/") {
		return
	}
	if j := path.Join(path.Dir(rel), t); j == ".." || strings.HasPrefix(j, "../") {
		return // never record a link that leaves the tree
	}
	s.dir(path.Dir(rel))
	s.header(&tar.Header{Typeflag: tar.TypeSymlink, Name: rel, Linkname: t, Mode: 0o777})
}

func (s *snapshot) links(dir string) {
	ents, err := s.fs.ReadDirents(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if e.Symlink {
			s.link(dir + "/" + e.Name)
		}
	}
}

// deviceTree copies a device directory: PCI functions and host bridges
// recursively, allowlisted attributes and links, and the subdirectories
// that hold netdevs and RDMA devices.
func (s *snapshot) deviceTree(rel string) {
	if s.err != nil {
		return
	}
	ents, err := s.fs.ReadDirents(rel)
	if err != nil {
		return
	}
	s.dir(rel)
	base := path.Base(rel)
	for _, e := range ents {
		p := rel + "/" + e.Name
		switch {
		case e.Symlink:
			if snapLinks[e.Name] || strings.HasPrefix(e.Name, "virtfn") {
				s.link(p)
			}
		case sysfs.IsBDF(e.Name) || isHostBridge(e.Name) || snapSubdirs[e.Name]:
			s.deviceTree(p)
		case (base == "gids" || base == "pkeys" || base == "ndevs" || base == "types") && e.Name != "0":
			// one entry of 128 is enough
		case snapPCIFiles[e.Name] || snapNetFiles[e.Name] || snapRDMAFiles[e.Name]:
			s.file(p)
		case isDeviceChild(base):
			// net/<name>, infiniband/<name>, ports/<n>, uverbsN, ...: descend.
			s.deviceTree(p)
		}
	}
}

// isDeviceChild: the directories whose entries are named devices or ports.
func isDeviceChild(parent string) bool {
	switch parent {
	case "net", "infiniband", "infiniband_verbs", "infiniband_mad", "ports", "gid_attrs", "pci_bus":
		return true
	}
	return false
}

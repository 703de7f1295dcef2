package genpolicy

import (
	"fmt"
	"path"
	"regexp"
	"slices"
	"strings"
)

// expectedMount is one mount the policy allows: at destination, of one of
// types, from a source matching the anchored pattern source. ro nil: the
// policy does not care. required: the pod declared it, so it must appear.
type expectedMount struct {
	Destination string   `json:"destination"`
	Types       []string `json:"types"`
	Source      string   `json:"source"`
	RO          *bool    `json:"ro"`
	Required    bool     `json:"required"`
	What        string   `json:"what"` // for messages: "configMap volume cfg"
	// ImageVolume: the host may back the mount with a read-only disk
	// (PrepareContainer's disk_volumes); DiskRequired: it must (an image
	// volume without subPath is a directory, always sent as a disk).
	ImageVolume  bool `json:"image_volume,omitempty"`
	DiskRequired bool `json:"disk_required,omitempty"`
}

// criRoot matches the directories containerd's CRI keeps a sandbox's files
// in (<root or state>/io.containerd.grpc.v1.cri/sandboxes/<id>/).
const criSandboxDir = `/.+/io\.containerd\.grpc\.v1\.cri/sandboxes/[0-9a-f]+/`

func boolp(b bool) *bool { return &b }

// ociDefaultMounts are the mounts of containerd's default spec (/run is
// removed by the CRI): kernel filesystems, no host path. sysfs and cgroup
// are read-only unless the container is privileged.
func ociDefaultMounts(privileged bool) []expectedMount {
	var ro *bool
	if !privileged {
		ro = boolp(true)
	}
	return []expectedMount{
		{Destination: "/proc", Types: []string{"proc"}, Source: "^proc$", What: "proc"},
		{Destination: "/dev", Types: []string{"tmpfs"}, Source: "^tmpfs$", What: "the default /dev tmpfs"},
		{Destination: "/dev/pts", Types: []string{"devpts"}, Source: "^devpts$", What: "devpts"},
		{Destination: "/dev/shm", Types: []string{"tmpfs"}, Source: "^shm$", What: "the default /dev/shm tmpfs"},
		{Destination: "/dev/mqueue", Types: []string{"mqueue"}, Source: "^mqueue$", What: "mqueue"},
		{Destination: "/sys", Types: []string{"sysfs"}, Source: "^sysfs$", RO: ro, What: "sysfs"},
		{Destination: "/sys/fs/cgroup", Types: []string{"cgroup", "cgroup2"}, Source: "^cgroup$", RO: ro, What: "cgroupfs"},
	}
}

// criFileMounts are the sandbox files containerd's CRI binds into every
// container (unless the kubelet mounts the destination): read-only with a
// read-only root filesystem.
// The files' ro follows readOnlyRootFilesystem in containerd; it is not
// pinned: their content is the host's anyway, and root.readonly is.
func criFileMounts(hostIPC bool) []expectedMount {
	shm := "^" + criSandboxDir + "shm$"
	if hostIPC {
		shm = "^(" + criSandboxDir + "shm|/dev/shm)$"
	}
	return []expectedMount{
		{Destination: "/etc/hostname", Types: []string{"bind"}, Source: "^" + criSandboxDir + "hostname$", What: "containerd's hostname file"},
		{Destination: "/etc/resolv.conf", Types: []string{"bind"}, Source: "^" + criSandboxDir + "resolv\\.conf$", What: "containerd's resolv.conf"},
		{Destination: "/dev/shm", Types: []string{"bind"}, Source: shm, RO: boolp(false), What: "the pod's /dev/shm"},
	}
}

func sandboxMounts() []expectedMount {
	m := append(ociDefaultMounts(false), criFileMounts(false)...)
	for i := range m {
		m[i].RO = nil // the guest's pause process reads none of them
	}
	return m
}

// pluginDirs are the kubelet's volume plugin directory names
// (<root>/pods/<uid>/volumes/kubernetes.io~<plugin>/<volume>), and whether
// the kubelet mounts the volume read-only whatever the volumeMount says
// (the API data volumes are).
var pluginDirs = map[string]struct {
	dir string
	ro  bool
}{
	"configMap":   {"configmap", true},
	"secret":      {"secret", true},
	"projected":   {"projected", true},
	"downwardAPI": {"downward-api", true},
	"emptyDir":    {"empty-dir", false},
}

func volumeKind(v *volume) (string, error) {
	switch {
	case v.ConfigMap != nil:
		return "configMap", nil
	case v.Secret != nil:
		return "secret", nil
	case len(v.Projected) > 0:
		return "projected", nil
	case len(v.DownwardAPI) > 0:
		return "downwardAPI", nil
	case len(v.EmptyDir) > 0:
		return "emptyDir", nil
	case v.HostPath != nil:
		return "hostPath", nil
	case v.PersistentVolumeClaim != nil:
		return "persistentVolumeClaim", nil
	case len(v.Image) > 0:
		return "image", nil
	}
	for name, set := range map[string]bool{"csi": len(v.CSI) > 0, "ephemeral": len(v.Ephemeral) > 0,
		"nfs": len(v.NFS) > 0, "iscsi": len(v.ISCSI) > 0, "gitRepo": len(v.GitRepo) > 0} {
		if set {
			return "", fmt.Errorf("volumes[%s].%s: not supported by the policy generator", v.Name, name)
		}
	}
	return "", fmt.Errorf("volumes[%s]: no volume source the policy generator supports (configMap, secret, projected, downwardAPI, emptyDir, hostPath, persistentVolumeClaim, image)", v.Name)
}

// containerMounts: the pod's volumes at their declared destinations, the
// kubelet's own files where the kubelet puts them, containerd's sandbox
// files and default kernel filesystems, and image-declared volumes.
func (g *generator) containerMounts(c *container, img *ImageConfig, sc secContext) ([]expectedMount, error) {
	s := &g.w.spec
	root := regexp.QuoteMeta(strings.TrimRight(g.o.KubeletRoot, "/"))
	pods := root + `/pods/[^/]+/`
	vols := map[string]*volume{}
	for i := range s.Volumes {
		vols[s.Volumes[i].Name] = &s.Volumes[i]
	}
	byDest := map[string]bool{}
	var out []expectedMount
	for i, vm := range c.VolumeMounts {
		field := fmt.Sprintf("containers[%s].volumeMounts[%d]", c.Name, i)
		v, ok := vols[vm.Name]
		if !ok {
			return nil, fmt.Errorf("%s.name: no volume %q in the pod", field, vm.Name)
		}
		if !strings.HasPrefix(vm.MountPath, "/") {
			return nil, fmt.Errorf("%s.mountPath: %q must be absolute", field, vm.MountPath)
		}
		kind, err := volumeKind(v)
		if err != nil {
			return nil, err
		}
		m := expectedMount{Destination: vm.MountPath, Types: []string{"bind"}, Required: true,
			What: fmt.Sprintf("%s volume %s", kind, v.Name), RO: boolp(vm.ReadOnly)}
		switch kind {
		case "hostPath":
			m.Source = "^" + regexp.QuoteMeta(v.HostPath.Path) + "$"
		case "image":
			// containerd's CRI mounts the image read-only at
			// <state>/image-volumes/<pod>/<manifest digest> and binds it,
			// or its subPath (the CRI's, not the kubelet's), read-only.
			m.Source = imageVolumeSource(vm.SubPath)
			m.RO = boolp(true)
			m.ImageVolume, m.DiskRequired = true, vm.SubPath == ""
		case "persistentVolumeClaim":
			// The source names the bound PersistentVolume, unknown here.
			m.Source = "^" + pods + `volumes/[^/]+/[^/]+$`
			m.RO = boolp(vm.ReadOnly || v.PersistentVolumeClaim.ReadOnly)
		default:
			p := pluginDirs[kind]
			m.Source = "^" + pods + `volumes/kubernetes\.io~` + regexp.QuoteMeta(p.dir) + "/" + regexp.QuoteMeta(v.Name) + "$"
			m.RO = boolp(vm.ReadOnly || p.ro)
		}
		if vm.SubPath != "" {
			switch kind {
			case "hostPath":
				m.Source = "^" + regexp.QuoteMeta(strings.TrimRight(v.HostPath.Path, "/")+"/"+vm.SubPath) + "$"
			case "image":
				// set above
			case "emptyDir":
				// The shim names the path it stands for (the guest holds
				// the emptyDir): exactly this one, as the kubelet cleans it.
				sub, err := emptyDirSubPath(vm.SubPath)
				if err != nil {
					return nil, fmt.Errorf("%s.subPath: %w", field, err)
				}
				m.Source = strings.TrimSuffix(m.Source, "$") + regexp.QuoteMeta(sub) + "$"
			default:
				m.Source = "^" + pods + "volume-subpaths/" + regexp.QuoteMeta(v.Name) + "/" + regexp.QuoteMeta(c.Name) + "/" + fmt.Sprint(i) + "$"
			}
		}
		out = append(out, m)
		byDest[vm.MountPath] = true
	}
	// The service account token, from the projected volume admission adds
	// (unless the pod opts out or mounts something there itself).
	if (s.AutomountServiceAccountToken == nil || *s.AutomountServiceAccountToken) && !byDest[ServiceAccountDir] {
		out = append(out, expectedMount{Destination: ServiceAccountDir, Types: []string{"bind"}, RO: boolp(true), Required: false,
			Source: "^" + pods + `volumes/kubernetes\.io~projected/kube-api-access-[a-z0-9]{5}$`, What: "the service account token"})
	}
	// /etc/hosts: the kubelet's (pod IPs, hostAliases), or containerd's.
	if !byDest["/etc/hosts"] {
		out = append(out, expectedMount{Destination: "/etc/hosts", Types: []string{"bind"},
			Source: "^(" + pods + "etc-hosts|" + criSandboxDir + "hosts)$", What: "the pod's /etc/hosts"})
	}
	tlog := c.TerminationMessagePath
	if tlog == "" {
		tlog = "/dev/termination-log"
	}
	if !byDest[tlog] {
		out = append(out, expectedMount{Destination: tlog, Types: []string{"bind"}, RO: boolp(false),
			Source: "^" + pods + "containers/" + regexp.QuoteMeta(c.Name) + "/[0-9a-f]+$", What: "the termination log"})
	}
	for _, m := range criFileMounts(s.HostIPC) {
		if !byDest[m.Destination] {
			out = append(out, m)
		}
	}
	for _, m := range ociDefaultMounts(sc.privileged) {
		if !byDest[m.Destination] {
			out = append(out, m)
		}
	}
	for _, dst := range imageVolumes(img) {
		if !byDest[dst] {
			out = append(out, expectedMount{Destination: dst, Types: []string{"bind"},
				Source: `^/.+/io\.containerd\.grpc\.v1\.cri/containers/[0-9a-f]+/volumes/[0-9a-f]+$`, What: "an image volume"})
		}
	}
	slices.SortStableFunc(out, func(a, b expectedMount) int { return strings.Compare(a.Destination, b.Destination) })
	return out, nil
}

// imageVolumes are the VOLUME destinations of the image config, which
// containerd backs with directories of its own.
func imageVolumes(img *ImageConfig) []string {
	return img.Volumes
}

// emptyDirSubPath is the suffix a subPath adds to its emptyDir's path in
// the source the shim writes: "/<subPath>" cleaned, "" for the volume
// itself. The API server refuses ".." and absolute subPaths; a pod file
// given to the generator directly is held to the same.
func emptyDirSubPath(sub string) (string, error) {
	if path.IsAbs(sub) || slices.Contains(strings.Split(sub, "/"), "..") {
		return "", fmt.Errorf("%q must be a relative path without \"..\"", sub)
	}
	if c := path.Clean(sub); c != "." {
		return "/" + c, nil
	}
	return "", nil
}

// imageVolumeSource is the source pattern of an image volume's bind mount,
// of its subPath sub when set. The digest in the path is the host's word
// on which image it mounted, not pinned: the host supplies the content.
func imageVolumeSource(sub string) string {
	p := `^/.+/io\.containerd\.grpc\.v1\.cri/image-volumes/[^/]+/[0-9a-f]{64}`
	if sub != "" {
		p += "/" + regexp.QuoteMeta(strings.Trim(path.Clean("/"+sub), "/"))
	}
	return p + "$"
}

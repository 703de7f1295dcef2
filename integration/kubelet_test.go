//go:build integration

package integration

// A kubelet-equivalent for the generated-policy tests: it turns a Pod (with
// its ConfigMaps and Secrets) into the CRI requests a kubelet makes for it,
// so that the policy the generator predicted meets containerd's real spec.
// It is written from the kubelet's documented behaviour, independently of
// the generator (virtcontainers/policy/genpolicy), and covers only what the
// test pods use; a field it does not know fails the test instead of being
// skipped. What it does, as pkg/kubelet does:
//   - admission's service-account volume (kube-api-access-<5>) is added to
//     every container at /var/run/secrets/kubernetes.io/serviceaccount;
//   - volumes live under <root>/pods/<uid>/volumes/kubernetes.io~<plugin>/
//     <name> (files written for configMap, secret, downwardAPI, projected);
//     configMap, secret, downwardAPI and projected mounts are read-only;
//   - /etc/hosts from <root>/pods/<uid>/etc-hosts, the termination log from
//     <root>/pods/<uid>/containers/<name>/<8 hex>;
//   - env: the master service's variables (KUBERNETES_*), envFrom, then env
//     in order with $(VAR) expanded; secret and ConfigMap values resolved;
//   - command and args expanded against the container's env;
//   - the security context (container over pod), the default masked and
//     read-only /proc paths, NoNewPrivs from allowPrivilegeEscalation.

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	yaml "go.yaml.in/yaml/v3"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

type kObject struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name        string            `yaml:"name"`
		Namespace   string            `yaml:"namespace"`
		Labels      map[string]string `yaml:"labels"`
		Annotations map[string]string `yaml:"annotations"`
	} `yaml:"metadata"`
	Data       map[string]string `yaml:"data"`
	StringData map[string]string `yaml:"stringData"`
	Spec       kPodSpec          `yaml:"spec"`
}

type kPodSpec struct {
	SecurityContext struct {
		RunAsUser          *int64   `yaml:"runAsUser"`
		RunAsGroup         *int64   `yaml:"runAsGroup"`
		FSGroup            *int64   `yaml:"fsGroup"`
		SupplementalGroups []int64  `yaml:"supplementalGroups"`
		Sysctls            []kNameV `yaml:"sysctls"`
	} `yaml:"securityContext"`
	InitContainers []kContainer `yaml:"initContainers"`
	Containers     []kContainer `yaml:"containers"`
	Volumes        []struct {
		Name      string    `yaml:"name"`
		EmptyDir  *struct{} `yaml:"emptyDir"`
		ConfigMap *struct {
			Name string `yaml:"name"`
		} `yaml:"configMap"`
		Secret *struct {
			SecretName string `yaml:"secretName"`
		} `yaml:"secret"`
		DownwardAPI *yaml.Node `yaml:"downwardAPI"`
		Projected   *yaml.Node `yaml:"projected"`
		HostPath    *struct {
			Path string `yaml:"path"`
		} `yaml:"hostPath"`
	} `yaml:"volumes"`
}

type kNameV struct {
	Name  string `yaml:"name"`
	Value string `yaml:"value"`
}

type kContainer struct {
	Name       string   `yaml:"name"`
	Image      string   `yaml:"image"`
	Command    []string `yaml:"command"`
	Args       []string `yaml:"args"`
	WorkingDir string   `yaml:"workingDir"`
	Env        []struct {
		Name      string `yaml:"name"`
		Value     string `yaml:"value"`
		ValueFrom *struct {
			FieldRef *struct {
				FieldPath string `yaml:"fieldPath"`
			} `yaml:"fieldRef"`
			SecretKeyRef *struct {
				Name string `yaml:"name"`
				Key  string `yaml:"key"`
			} `yaml:"secretKeyRef"`
		} `yaml:"valueFrom"`
	} `yaml:"env"`
	EnvFrom []struct {
		ConfigMapRef *struct {
			Name string `yaml:"name"`
		} `yaml:"configMapRef"`
	} `yaml:"envFrom"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
		ReadOnly  bool   `yaml:"readOnly"`
	} `yaml:"volumeMounts"`
	ReadinessProbe *struct {
		Exec struct {
			Command []string `yaml:"command"`
		} `yaml:"exec"`
	} `yaml:"readinessProbe"`
	SecurityContext *struct {
		RunAsUser                *int64 `yaml:"runAsUser"`
		AllowPrivilegeEscalation *bool  `yaml:"allowPrivilegeEscalation"`
		ReadOnlyRootFilesystem   bool   `yaml:"readOnlyRootFilesystem"`
		Capabilities             *struct {
			Add  []string `yaml:"add"`
			Drop []string `yaml:"drop"`
		} `yaml:"capabilities"`
		SeccompProfile *struct {
			Type string `yaml:"type"`
		} `yaml:"seccompProfile"`
	} `yaml:"securityContext"`
}

// kubelet holds one pod as the kubelet would run it.
type kubelet struct {
	root       string // the kubelet's --root-dir
	uid        string
	pod        *kObject
	configMaps map[string]map[string]string
	secrets    map[string]map[string]string
	saVolume   string // kube-api-access-xxxxx
}

// masked and read-only /proc paths the kubelet sends for ProcMount Default.
var (
	kubeletMaskedPaths   = []string{"/proc/asound", "/proc/acpi", "/proc/interrupts", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap"}
	kubeletReadonlyPaths = []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}
)

func newKubelet(root string, docs []byte) (*kubelet, error) {
	k := &kubelet{root: root, uid: "0c0c0c0c-" + randHexN(4) + "-4000-8000-" + randHexN(12),
		configMaps: map[string]map[string]string{}, secrets: map[string]map[string]string{}, saVolume: "kube-api-access-" + randHexN(5)[:5]}
	dec := yaml.NewDecoder(strings.NewReader(string(docs)))
	for {
		var o kObject
		if err := dec.Decode(&o); err != nil {
			if err.Error() == "EOF" {
				break
			}
			return nil, err
		}
		switch o.Kind {
		case "ConfigMap":
			k.configMaps[o.Metadata.Name] = o.Data
		case "Secret":
			k.secrets[o.Metadata.Name] = o.StringData
		case "Pod":
			k.pod = &o
		default:
			return nil, fmt.Errorf("kubelet stand-in: kind %q not handled", o.Kind)
		}
	}
	if k.pod == nil {
		return nil, fmt.Errorf("kubelet stand-in: no Pod")
	}
	return k, k.writeVolumes()
}

func randHexN(n int) string {
	b := make([]byte, (n+1)/2)
	rand.Read(b)
	return hex.EncodeToString(b)[:n]
}

func (k *kubelet) podDir() string { return filepath.Join(k.root, "pods", k.uid) }

// writeVolumes lays out the pod's volume directories and files as the
// kubelet's volume plugins do.
func (k *kubelet) writeVolumes() error {
	write := func(dir string, files map[string]string) error {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		for name, content := range files {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
				return err
			}
		}
		return nil
	}
	vols := filepath.Join(k.podDir(), "volumes")
	for _, v := range k.pod.Spec.Volumes {
		var err error
		switch {
		case v.EmptyDir != nil:
			err = write(filepath.Join(vols, "kubernetes.io~empty-dir", v.Name), nil)
		case v.ConfigMap != nil:
			err = write(filepath.Join(vols, "kubernetes.io~configmap", v.Name), k.configMaps[v.ConfigMap.Name])
		case v.Secret != nil:
			err = write(filepath.Join(vols, "kubernetes.io~secret", v.Name), k.secrets[v.Secret.SecretName])
		case v.DownwardAPI != nil:
			err = write(filepath.Join(vols, "kubernetes.io~downward-api", v.Name), map[string]string{"labels": "app=\"web\"\n"})
		case v.Projected != nil:
			err = write(filepath.Join(vols, "kubernetes.io~projected", v.Name), k.configMaps["app-config"])
		case v.HostPath != nil:
		default:
			return fmt.Errorf("kubelet stand-in: volume %s: kind not handled", v.Name)
		}
		if err != nil {
			return err
		}
	}
	sa := map[string]string{"token": "eyJ.test.token", "ca.crt": "-----BEGIN CERTIFICATE-----\n", "namespace": k.pod.Metadata.Namespace}
	if err := write(filepath.Join(vols, "kubernetes.io~projected", k.saVolume), sa); err != nil {
		return err
	}
	hosts := "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"
	return write(k.podDir(), map[string]string{"etc-hosts": hosts})
}

// sandboxConfig is the kubelet's PodSandboxConfig (generatePodSandboxConfig).
func (k *kubelet) sandboxConfig(logDir string, annotations map[string]string) *runtimeapi.PodSandboxConfig {
	p := k.pod
	sc := &runtimeapi.LinuxSandboxSecurityContext{
		NamespaceOptions:   &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_POD, Pid: runtimeapi.NamespaceMode_CONTAINER, Ipc: runtimeapi.NamespaceMode_POD},
		SupplementalGroups: k.supplementalGroups(),
	}
	if u := p.Spec.SecurityContext.RunAsUser; u != nil {
		sc.RunAsUser = &runtimeapi.Int64Value{Value: *u}
	}
	if g := p.Spec.SecurityContext.RunAsGroup; g != nil {
		sc.RunAsGroup = &runtimeapi.Int64Value{Value: *g}
	}
	sysctls := map[string]string{}
	for _, s := range p.Spec.SecurityContext.Sysctls {
		sysctls[s.Name] = s.Value
	}
	ann := map[string]string{}
	for k, v := range p.Metadata.Annotations {
		ann[k] = v
	}
	for k, v := range annotations {
		ann[k] = v
	}
	labels := map[string]string{"io.kubernetes.pod.name": p.Metadata.Name, "io.kubernetes.pod.namespace": p.Metadata.Namespace, "io.kubernetes.pod.uid": k.uid, "coco-it": "1"}
	for k, v := range p.Metadata.Labels {
		labels[k] = v
	}
	return &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: p.Metadata.Name, Namespace: p.Metadata.Namespace, Uid: k.uid},
		Hostname:     p.Metadata.Name,
		LogDirectory: logDir,
		Labels:       labels,
		Annotations:  ann,
		Linux:        &runtimeapi.LinuxPodSandboxConfig{SecurityContext: sc, Sysctls: sysctls},
	}
}

func (k *kubelet) supplementalGroups() []int64 {
	sc := k.pod.Spec.SecurityContext
	g := append([]int64(nil), sc.SupplementalGroups...)
	if sc.FSGroup != nil {
		g = append(g, *sc.FSGroup)
	}
	return g
}

func (k *kubelet) container(name string) (*kContainer, bool) {
	for _, list := range [][]kContainer{k.pod.Spec.InitContainers, k.pod.Spec.Containers} {
		for i := range list {
			if list[i].Name == name {
				return &list[i], true
			}
		}
	}
	return nil, false
}

// containerConfig is the kubelet's ContainerConfig (generateContainerConfig).
func (k *kubelet) containerConfig(name string, attempt uint32) (*runtimeapi.ContainerConfig, error) {
	c, ok := k.container(name)
	if !ok {
		return nil, fmt.Errorf("no container %s", name)
	}
	env, err := k.env(c)
	if err != nil {
		return nil, err
	}
	lookup := map[string]string{}
	for _, kv := range env {
		lookup[kv.Key] = string(kv.Value)
	}
	mounts, err := k.mounts(c)
	if err != nil {
		return nil, err
	}
	pod := k.pod.Spec.SecurityContext
	sc := &runtimeapi.LinuxContainerSecurityContext{
		NamespaceOptions:   &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_POD, Pid: runtimeapi.NamespaceMode_CONTAINER, Ipc: runtimeapi.NamespaceMode_POD},
		SupplementalGroups: k.supplementalGroups(),
		MaskedPaths:        kubeletMaskedPaths,
		ReadonlyPaths:      kubeletReadonlyPaths,
	}
	if pod.RunAsUser != nil {
		sc.RunAsUser = &runtimeapi.Int64Value{Value: *pod.RunAsUser}
	}
	if pod.RunAsGroup != nil {
		sc.RunAsGroup = &runtimeapi.Int64Value{Value: *pod.RunAsGroup}
	}
	if s := c.SecurityContext; s != nil {
		if s.RunAsUser != nil {
			sc.RunAsUser = &runtimeapi.Int64Value{Value: *s.RunAsUser}
		}
		sc.NoNewPrivs = s.AllowPrivilegeEscalation != nil && !*s.AllowPrivilegeEscalation
		sc.ReadonlyRootfs = s.ReadOnlyRootFilesystem
		if s.Capabilities != nil {
			sc.Capabilities = &runtimeapi.Capability{AddCapabilities: s.Capabilities.Add, DropCapabilities: s.Capabilities.Drop}
		}
		if s.SeccompProfile != nil && s.SeccompProfile.Type == "RuntimeDefault" {
			sc.Seccomp = &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault}
		}
	}
	return &runtimeapi.ContainerConfig{
		Metadata:   &runtimeapi.ContainerMetadata{Name: c.Name, Attempt: attempt},
		Image:      &runtimeapi.ImageSpec{Image: c.Image, UserSpecifiedImage: c.Image},
		Command:    expandAll(c.Command, lookup),
		Args:       expandAll(c.Args, lookup),
		WorkingDir: c.WorkingDir,
		Envs:       env,
		Mounts:     mounts,
		LogPath:    fmt.Sprintf("%s/%d.log", c.Name, attempt),
		Labels:     map[string]string{"io.kubernetes.container.name": c.Name, "io.kubernetes.pod.uid": k.uid},
		Linux:      &runtimeapi.LinuxContainerConfig{SecurityContext: sc},
	}, nil
}

// env: the master service's variables, envFrom, then env in order.
func (k *kubelet) env(c *kContainer) ([]*runtimeapi.KeyValue, error) {
	vars := map[string]string{
		"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443", "KUBERNETES_SERVICE_PORT_HTTPS": "443",
		"KUBERNETES_PORT": "tcp://10.96.0.1:443", "KUBERNETES_PORT_443_TCP": "tcp://10.96.0.1:443",
		"KUBERNETES_PORT_443_TCP_PROTO": "tcp", "KUBERNETES_PORT_443_TCP_PORT": "443", "KUBERNETES_PORT_443_TCP_ADDR": "10.96.0.1",
	}
	order := []string{}
	set := func(n, v string) {
		if _, ok := vars[n]; !ok {
			order = append(order, n)
		}
		vars[n] = v
	}
	for _, n := range []string{"KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT", "KUBERNETES_SERVICE_PORT_HTTPS", "KUBERNETES_PORT", "KUBERNETES_PORT_443_TCP", "KUBERNETES_PORT_443_TCP_PROTO", "KUBERNETES_PORT_443_TCP_PORT", "KUBERNETES_PORT_443_TCP_ADDR"} {
		order = append(order, n)
	}
	for _, src := range c.EnvFrom {
		if src.ConfigMapRef == nil {
			return nil, fmt.Errorf("kubelet stand-in: envFrom without configMapRef")
		}
		for key, v := range k.configMaps[src.ConfigMapRef.Name] {
			set(key, v)
		}
	}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			set(e.Name, expand(e.Value, vars))
		case e.ValueFrom.FieldRef != nil:
			switch e.ValueFrom.FieldRef.FieldPath {
			case "metadata.name":
				set(e.Name, k.pod.Metadata.Name)
			case "metadata.namespace":
				set(e.Name, k.pod.Metadata.Namespace)
			case "status.podIP":
				set(e.Name, "10.251.0.9")
			default:
				return nil, fmt.Errorf("kubelet stand-in: fieldRef %s", e.ValueFrom.FieldRef.FieldPath)
			}
		case e.ValueFrom.SecretKeyRef != nil:
			set(e.Name, k.secrets[e.ValueFrom.SecretKeyRef.Name][e.ValueFrom.SecretKeyRef.Key])
		default:
			return nil, fmt.Errorf("kubelet stand-in: env %s: source not handled", e.Name)
		}
	}
	out := make([]*runtimeapi.KeyValue, 0, len(order))
	for _, n := range order {
		out = append(out, &runtimeapi.KeyValue{Key: n, Value: []byte(vars[n])})
	}
	return out, nil
}

// expand is the kubelet's $(VAR) expansion (third_party/forked/golang/expansion).
func expand(s string, vars map[string]string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i:], ')')
			if end < 0 {
				b.WriteString(s[i:])
				return b.String()
			}
			name := s[i+2 : i+end]
			if v, ok := vars[name]; ok {
				b.WriteString(v)
			} else {
				b.WriteString(s[i : i+end+1])
			}
			i += end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}

func expandAll(in []string, vars map[string]string) []string {
	var out []string
	for _, s := range in {
		out = append(out, expand(s, vars))
	}
	return out
}

// mounts: the container's volumes, the service-account token, /etc/hosts
// and the termination log (makeMounts).
func (k *kubelet) mounts(c *kContainer) ([]*runtimeapi.Mount, error) {
	plugin := map[string]string{}
	readOnly := map[string]bool{}
	hostPaths := map[string]string{}
	for _, v := range k.pod.Spec.Volumes {
		switch {
		case v.EmptyDir != nil:
			plugin[v.Name] = "empty-dir"
		case v.ConfigMap != nil:
			plugin[v.Name], readOnly[v.Name] = "configmap", true
		case v.Secret != nil:
			plugin[v.Name], readOnly[v.Name] = "secret", true
		case v.DownwardAPI != nil:
			plugin[v.Name], readOnly[v.Name] = "downward-api", true
		case v.Projected != nil:
			plugin[v.Name], readOnly[v.Name] = "projected", true
		case v.HostPath != nil:
			hostPaths[v.Name] = v.HostPath.Path
		}
	}
	var out []*runtimeapi.Mount
	for _, vm := range c.VolumeMounts {
		host, ok := hostPaths[vm.Name]
		if !ok {
			p, ok := plugin[vm.Name]
			if !ok {
				return nil, fmt.Errorf("kubelet stand-in: volume %s", vm.Name)
			}
			host = filepath.Join(k.podDir(), "volumes", "kubernetes.io~"+p, vm.Name)
		}
		out = append(out, &runtimeapi.Mount{ContainerPath: vm.MountPath, HostPath: host, Readonly: vm.ReadOnly || readOnly[vm.Name],
			Propagation: runtimeapi.MountPropagation_PROPAGATION_PRIVATE})
	}
	out = append(out,
		&runtimeapi.Mount{ContainerPath: "/var/run/secrets/kubernetes.io/serviceaccount", Readonly: true,
			HostPath: filepath.Join(k.podDir(), "volumes", "kubernetes.io~projected", k.saVolume)},
		&runtimeapi.Mount{ContainerPath: "/etc/hosts", HostPath: filepath.Join(k.podDir(), "etc-hosts")})
	tlog := filepath.Join(k.podDir(), "containers", c.Name, randHexN(8))
	if err := os.MkdirAll(filepath.Dir(tlog), 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(tlog, nil, 0o644); err != nil {
		return nil, err
	}
	return append(out, &runtimeapi.Mount{ContainerPath: "/dev/termination-log", HostPath: tlog}), nil
}

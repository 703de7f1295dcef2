// Package genpolicy generates an agent policy that pins a pod: from the
// pod's YAML (and its images' configs) it predicts what containerd's CRI
// writes into the OCI spec of the sandbox and of every container, and
// emits Rego that allows those specs and nothing else, with reasons that
// name the container, the field and what was expected when it denies.
// It never links the Rego engine (the shim runs this; OPA stays in the
// guest's coco-policy).
package genpolicy

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// Options tune what the generated policy allows beyond the pod.
type Options struct {
	Images Images
	// KubeletRoot is the kubelet's --root-dir ("" = /var/lib/kubelet):
	// volume mounts come from under it.
	KubeletRoot string
	// AllowExec lists argvs the host may exec in every container, besides
	// the pod's exec probes and lifecycle hooks.
	AllowExec [][]string
	// AllowAllExec lets the host exec anything (debugging only).
	AllowAllExec bool
	// AllowLogs lets the host read the containers' output (kubectl logs).
	AllowLogs bool
	// ServiceLinkPrefixes narrows the service variables (enableServiceLinks)
	// to services whose variables start with one of these; none: any.
	ServiceLinkPrefixes []string
	// SandboxImage pins the sandbox (pause) image name; "" leaves it free
	// (the guest runs its own pause binary whatever the host names).
	SandboxImage string
}

// AllowExecAnnotation on the pod (template) lists more commands exec may
// run, one per line, in the syntax of --allow-exec (shell-like words).
const AllowExecAnnotation = "policy.coco-runtime.io/allow-exec"

// ServiceAccountDir is where the kubelet mounts the service account token
// (the kube-api-access-* projected volume admission adds).
const ServiceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// Policy is the generated policy for one workload.
type Policy struct {
	Workload *Workload
	Rego     string
	Warnings []string
}

type generator struct {
	ctx    context.Context
	o      Options
	in     *Input
	w      *Workload
	warn   []string
	images map[string]*ImageConfig
}

func (g *generator) warnf(format string, args ...any) {
	g.warn = append(g.warn, fmt.Sprintf(format, args...))
}

// Generate returns the policy of one workload of in.
func Generate(ctx context.Context, in *Input, w *Workload, o Options) (*Policy, error) {
	if o.KubeletRoot == "" {
		o.KubeletRoot = "/var/lib/kubelet"
	}
	g := &generator{ctx: ctx, o: o, in: in, w: w, images: map[string]*ImageConfig{}}
	if err := checkSupported(w); err != nil {
		return nil, fmt.Errorf("%s %s: %w", w.Kind, w.Name, err)
	}
	data, err := g.pod()
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", w.Kind, w.Name, err)
	}
	rego, err := render(w, data, o)
	if err != nil {
		return nil, err
	}
	return &Policy{Workload: w, Rego: rego, Warnings: g.warn}, nil
}

// checkSupported refuses, by name, what the policy cannot pin.
func checkSupported(w *Workload) error {
	s := &w.spec
	switch {
	case len(s.EphemeralContainers) > 0:
		return fmt.Errorf("spec.ephemeralContainers: not supported (kubectl debug containers are added after the policy is fixed)")
	case s.SetHostnameAsFQDN != nil && *s.SetHostnameAsFQDN:
		return fmt.Errorf("spec.setHostnameAsFQDN: not supported (the hostname would depend on the cluster domain)")
	case s.HostnameOverride != nil:
		return fmt.Errorf("spec.hostnameOverride: not supported")
	case s.HostUsers != nil && !*s.HostUsers:
		return fmt.Errorf("spec.hostUsers: false (user namespaces) is not supported")
	case s.OS != nil && s.OS.Name != "linux":
		return fmt.Errorf("spec.os.name: %q is not supported, only linux", s.OS.Name)
	case len(s.ResourceClaims) > 0:
		return fmt.Errorf("spec.resourceClaims: not supported (devices)")
	}
	for _, c := range allContainers(s) {
		if c.Image == "" {
			return fmt.Errorf("containers[%s].image: missing", c.Name)
		}
		for i, m := range c.VolumeMounts {
			if m.SubPathExpr != "" {
				return fmt.Errorf("containers[%s].volumeMounts[%d].subPathExpr: not supported", c.Name, i)
			}
		}
	}
	return nil
}

func allContainers(s *podSpec) []*container {
	var out []*container
	for i := range s.InitContainers {
		out = append(out, &s.InitContainers[i])
	}
	for i := range s.Containers {
		out = append(out, &s.Containers[i])
	}
	return out
}

// pod is the `pod` document of the generated Rego.
func (g *generator) pod() (map[string]any, error) {
	s := &g.w.spec
	hostname := g.w.PodName
	if s.Hostname != "" {
		hostname = nameMatch{Exact: s.Hostname}
	}
	if hostname.Exact != "" && len(hostname.Exact) > 63 {
		hostname.Exact = strings.TrimRight(hostname.Exact[:63], "-.")
	}
	sysctls := map[string]string{}
	if s.SecurityContext != nil {
		for _, sc := range s.SecurityContext.Sysctls {
			sysctls[sc.Name] = sc.Value
		}
	}
	containers := map[string]any{}
	var ports []int32
	execs, err := g.extraExecs()
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for _, c := range allContainers(s) {
		if c.Name == "" || seen[c.Name] {
			return nil, fmt.Errorf("containers: name %q missing or used twice", c.Name)
		}
		seen[c.Name] = true
		e, err := g.container(c, hostname, sysctls, execs)
		if err != nil {
			return nil, err
		}
		containers[c.Name] = e
		for _, p := range c.Ports {
			if p.Protocol == "" || p.Protocol == "TCP" {
				ports = append(ports, p.ContainerPort)
			}
		}
	}
	if ports == nil {
		ports = []int32{}
	}
	return map[string]any{
		"name":                  g.w.PodName.match(),
		"namespace":             g.w.Namespace,
		"hostname":              hostname.match(),
		"sysctls":               sysctls,
		"runtime_sysctls":       runtimeSysctls(s),
		"sandbox":               g.sandbox(sysctls),
		"containers":            containers,
		"allow_all_exec":        g.o.AllowAllExec,
		"allow_logs":            g.o.AllowLogs,
		"ports":                 ports,
		"service_link_prefixes": g.serviceLinkPrefixes(),
	}, nil
}

// extraExecs are the commands every container may exec: the flags' and
// the pod annotation's.
func (g *generator) extraExecs() ([][]string, error) {
	out := slices.Clone(g.o.AllowExec)
	if a := g.w.meta.Annotations[AllowExecAnnotation]; a != "" {
		for i, line := range strings.Split(a, "\n") {
			if strings.TrimSpace(line) == "" {
				continue
			}
			argv, err := SplitCommand(line)
			if err != nil {
				return nil, fmt.Errorf("metadata.annotations[%s] line %d: %w", AllowExecAnnotation, i+1, err)
			}
			out = append(out, argv)
		}
	}
	return out, nil
}

func (g *generator) image(ref string) (*ImageConfig, error) {
	if img, ok := g.images[ref]; ok {
		return img, nil
	}
	if g.o.Images == nil {
		return nil, fmt.Errorf("image %q: no image source (give --image-layout or allow registry access)", ref)
	}
	img, err := g.o.Images.Config(g.ctx, ref)
	if err != nil {
		return nil, err
	}
	g.images[ref] = img
	return img, nil
}

func (g *generator) container(c *container, hostname nameMatch, podSysctls map[string]string, extraExecs [][]string) (map[string]any, error) {
	img, err := g.image(c.Image)
	if err != nil {
		return nil, fmt.Errorf("containers[%s]: %w", c.Name, err)
	}
	kenv, err := g.kubeletEnv(c)
	if err != nil {
		return nil, err
	}
	hn := literal(hostname.Exact)
	if hostname.Regex != "" {
		hn = unknown()
	}
	env := containerdEnv(img, hn, kenv, c.TTY)
	args, err := processArgs(c, img, g.lookup(kenv))
	if err != nil {
		return nil, err
	}
	envData := map[string]any{}
	for _, n := range env.names {
		m := env.values[n].match()
		if n == "HOSTNAME" && hostname.Regex != "" && env.values[n].parts[0].hole && len(env.values[n].parts) == 1 {
			m = matcher("regex", hostname.Regex)
		}
		envData[n] = m
	}
	argsData := make([]any, len(args))
	texts := make([]string, len(args))
	for i, a := range args {
		argsData[i] = a.match()
		if s, ok := a.exact(); ok {
			texts[i] = fmt.Sprintf("%q", s)
		} else {
			texts[i] = "<any>"
			if r, ok := a.match()["regex"].(string); ok {
				texts[i] = r
			}
		}
	}
	cwd := "/"
	if c.WorkingDir != "" {
		cwd = c.WorkingDir
	} else if img.WorkingDir != "" {
		cwd = img.WorkingDir
	}
	sc := effective(g.w.spec.SecurityContext, c.SecurityContext)
	e := map[string]any{
		"name":              c.Name,
		"images":            imageNames(c.Image),
		"image_annotation":  "io.kubernetes.cri.image-name",
		"pull_images":       pullRefs(c.Image, img.Digest),
		"args":              argsData,
		"args_text":         "[" + strings.Join(texts, ", ") + "]",
		"env":               envData,
		"cwd":               cwd,
		"sysctls":           map[string]string{},
		"privileged":        sc.privileged,
		"no_new_privileges": sc.noNewPrivileges,
		"readonly_rootfs":   sc.readonlyRootfs,
		"seccomp":           sc.seccomp,
		"namespaces":        g.containerNamespaces(sc.privileged),
		"exec":              g.execs(c, extraExecs),
		"masked_paths":      []string{},
		"readonly_paths":    []string{},
	}
	if !sc.privileged && (sc.procMount == "" || sc.procMount == "Default") {
		// The kubelet's default masked and read-only paths (a stable core
		// of them; newer kubelets mask more).
		e["masked_paths"] = []string{"/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"}
		e["readonly_paths"] = []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}
	}
	if err := g.user(e, c, img, sc); err != nil {
		return nil, err
	}
	caps, capsAny := containerCaps(sc)
	e["caps"], e["caps_any"] = caps, capsAny || sc.privileged
	mounts, err := g.containerMounts(c, img, sc)
	if err != nil {
		return nil, err
	}
	e["mounts"] = mounts
	if e["block_devices"], err = g.blockDevices(c); err != nil {
		return nil, err
	}
	return complete(e), nil
}

// entryKeys are the keys of every container entry of the policy's pod
// document; complete fills the ones left out with null ("not pinned") or
// false, so that every entry has them all (OPA's type checker refuses a
// reference to a key that no entry has).
var entryKeys = map[string]any{
	"name": nil, "images": nil, "image_annotation": "", "pull_images": []string{}, "args": nil, "args_text": "",
	"env": nil, "cwd": nil, "uid": nil, "gid": nil, "gids": []int64{}, "caps": []string{}, "caps_any": false, "block_devices": []string{},
	"caps_within": false, "privileged": false, "no_new_privileges": false, "readonly_rootfs": false,
	"seccomp": "", "sysctls": map[string]string{}, "namespaces": map[string]string{}, "mounts": []expectedMount{},
	"exec": [][]string{}, "masked_paths": []string{}, "readonly_paths": []string{},
}

func complete(e map[string]any) map[string]any {
	for k, v := range entryKeys {
		if _, ok := e[k]; !ok {
			e[k] = v
		}
	}
	return e
}

// execs: the container's exec probes and exec lifecycle hooks (the kubelet
// runs them through ExecSync), plus the owner's extra commands.
func (g *generator) execs(c *container, extra [][]string) [][]string {
	out := [][]string{}
	add := func(argv []string) {
		if len(argv) > 0 && !slices.ContainsFunc(out, func(a []string) bool { return slices.Equal(a, argv) }) {
			out = append(out, argv)
		}
	}
	for _, p := range []*probe{c.LivenessProbe, c.ReadinessProbe, c.StartupProbe} {
		if p != nil && p.Exec != nil {
			add(p.Exec.Command)
		}
	}
	if c.Lifecycle != nil {
		for _, h := range []*handler{c.Lifecycle.PostStart, c.Lifecycle.PreStop} {
			if h != nil && h.Exec != nil {
				add(h.Exec.Command)
			}
		}
	}
	for _, a := range extra {
		add(a)
	}
	return out
}

func (g *generator) sandbox(sysctls map[string]string) map[string]any {
	s := &g.w.spec
	privileged := false
	for _, c := range allContainers(s) {
		if c.SecurityContext != nil && c.SecurityContext.Privileged != nil && *c.SecurityContext.Privileged {
			privileged = true
		}
	}
	ns := map[string]string{"mount": "new", "cgroup": "new_optional", "user": "absent",
		"network": "path", "uts": "new", "ipc": "new", "pid": "new"}
	if s.HostNetwork {
		ns["network"], ns["uts"] = "absent", "absent"
	}
	if s.HostIPC {
		ns["ipc"] = "absent"
	}
	if s.HostPID {
		ns["pid"] = "absent"
	}
	e := map[string]any{
		"name":             "sandbox",
		"image_annotation": "io.kubernetes.cri.podsandbox.image-name",
		"pull_images":      []string{},
		"sysctls":          sysctls,
		"privileged":       privileged,
		"caps":             defaultCaps,
		"caps_within":      true,
		"caps_any":         privileged,
		"seccomp":          "any",
		"namespaces":       ns,
		"mounts":           sandboxMounts(),
	}
	if g.o.SandboxImage != "" {
		e["images"] = imageNames(g.o.SandboxImage)
	}
	if pc := s.SecurityContext; pc != nil && pc.RunAsUser != nil {
		e["uid"] = *pc.RunAsUser
	}
	e["gids"] = podGroups(s.SecurityContext)
	return complete(e)
}

func (g *generator) containerNamespaces(privileged bool) map[string]string {
	s := &g.w.spec
	ns := map[string]string{"mount": "new", "cgroup": "new_optional", "user": "absent",
		"network": "path", "uts": "path", "ipc": "path", "pid": "new"}
	if s.HostNetwork {
		ns["network"], ns["uts"] = "absent", "absent"
	}
	if s.HostIPC {
		ns["ipc"] = "absent"
	}
	switch {
	case s.HostPID:
		ns["pid"] = "absent"
	case s.ShareProcessNamespace != nil && *s.ShareProcessNamespace:
		ns["pid"] = "path"
	}
	if privileged {
		ns["cgroup"] = "absent"
	}
	return ns
}

// render fills the Rego template with the pod document.
func render(w *Workload, data map[string]any, o Options) (string, error) {
	js, err := json.MarshalIndent(data, "", "\t")
	if err != nil {
		return "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# Agent policy generated by `containerd-shim-coco-v2 policy generate` for %s %s/%s.\n", w.Kind, w.Namespace, w.Name)
	b.WriteString("# It pins what containerd's CRI writes for the sandbox and each container:\n")
	b.WriteString("# image name, args, env, cwd, user, capabilities, privileged, seccomp,\n")
	b.WriteString("# sysctls, namespaces and every mount by kind and destination.\n")
	b.WriteString("# The image pin is by name; the rootfs content is pinned by digest only\n")
	b.WriteString("# when the guest pulls the image (rootfs guest_pull).\n")
	if o.AllowAllExec {
		b.WriteString("#\n# WARNING: ALLOW-ALL-EXEC. The host may run ANY command in these containers\n")
		b.WriteString("# (--allow-all-exec, for debugging). Do not use this policy in production.\n")
	}
	b.WriteString("package agent_policy\n\nimport rego.v1\n\n")
	b.WriteString("pod := ")
	b.Write(js)
	b.WriteString("\n")
	b.WriteString(pinnedRego)
	return b.String(), nil
}

// runtimeSysctls are what containerd's CRI adds to a sandbox with its own
// network when the pod does not set them (enable_unprivileged_ports and
// enable_unprivileged_icmp, both on by default): harmless, namespaced.
func runtimeSysctls(s *podSpec) map[string]string {
	if s.HostNetwork {
		return map[string]string{}
	}
	return map[string]string{
		"net.ipv4.ip_unprivileged_port_start": "0",
		"net.ipv4.ping_group_range":           "0 2147483647",
	}
}

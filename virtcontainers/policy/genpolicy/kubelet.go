package genpolicy

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
)

// This file predicts what the kubelet hands containerd for a container:
// its environment (Kubernetes docs, "Define Environment Variables for a
// Container" and "Define Dependent Environment Variables") and its command
// and args, and then what containerd's CRI makes of them with the image
// config (internal/cri/opts.WithProcessArgs, container_create.go).

// envVars is an ordered set of variables: later definitions replace
// earlier ones in place, as both the kubelet's map and containerd's
// oci.WithEnv do.
type envVars struct {
	names  []string
	values map[string]value
}

func newEnvVars() *envVars { return &envVars{values: map[string]value{}} }

func (e *envVars) set(name string, v value) {
	if _, ok := e.values[name]; !ok {
		e.names = append(e.names, name)
	}
	e.values[name] = v
}

func (e *envVars) get(name string) (value, bool) {
	v, ok := e.values[name]
	return v, ok
}

// serviceLinkName matches the variables the kubelet derives from Services
// (pkg/kubelet/envvars): <SVC>_SERVICE_HOST, <SVC>_SERVICE_PORT[_<NAME>],
// <SVC>_PORT[_<port>_<PROTO>[_PROTO|_PORT|_ADDR]].
// Compiled on first use: package initialisation runs in every per-pod
// shim process, which never generates a policy.
var serviceLinkName = sync.OnceValue(func() *regexp.Regexp {
	return regexp.MustCompile(`^[A-Z_][A-Z0-9_]*_(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?|PORT(_[0-9]+_(TCP|UDP|SCTP)(_PROTO|_PORT|_ADDR)?)?)$`)
})

// kubeletEnv computes the container's variables as the kubelet does:
// envFrom first (in order, later sources winning), then env in order, each
// value with $(VAR) expanded against what is defined so far and the
// service variables; valueFrom values are not expanded. A value only known
// on the node (a Secret's, the pod IP, ...) becomes a hole.
func (g *generator) kubeletEnv(c *container) (*envVars, error) {
	env := newEnvVars()
	for i, src := range c.EnvFrom {
		field := fmt.Sprintf("containers[%s].envFrom[%d]", c.Name, i)
		switch {
		case src.ConfigMapRef != nil:
			data, ok := lookupNS(g.in.ConfigMaps, g.w.Namespace, src.ConfigMapRef.Name)
			if !ok {
				return nil, fmt.Errorf("%s.configMapRef: ConfigMap %q is not in the input; give it alongside the workload (its keys become variables the policy must name)", field, src.ConfigMapRef.Name)
			}
			for _, k := range sortedKeys(data) {
				env.set(src.Prefix+k, literal(data[k]))
			}
		case src.SecretRef != nil:
			keys, ok := lookupNS(g.in.Secrets, g.w.Namespace, src.SecretRef.Name)
			if !ok {
				return nil, fmt.Errorf("%s.secretRef: Secret %q is not in the input; give it alongside the workload (values may be empty: only its keys are used, never its values)", field, src.SecretRef.Name)
			}
			keys = slices.Clone(keys)
			slices.Sort(keys)
			for _, k := range keys {
				env.set(src.Prefix+k, unknown())
			}
		default:
			return nil, fmt.Errorf("%s: neither configMapRef nor secretRef", field)
		}
	}
	for i, v := range c.Env {
		field := fmt.Sprintf("containers[%s].env[%d]", c.Name, i)
		if v.Name == "" {
			return nil, fmt.Errorf("%s.name: missing", field)
		}
		if v.ValueFrom == nil {
			env.set(v.Name, expand(v.Value, g.lookup(env)))
			continue
		}
		val, ok, err := g.valueFrom(field, v.ValueFrom)
		if err != nil {
			return nil, err
		}
		if ok {
			env.set(v.Name, val)
		}
	}
	return env, nil
}

// lookup resolves $(NAME) against the variables defined so far, then the
// service variables the kubelet would add (their values are the node's).
func (g *generator) lookup(env *envVars) func(string) (value, bool) {
	return func(name string) (value, bool) {
		if v, ok := env.get(name); ok {
			return v, true
		}
		if g.serviceLink(name) {
			return unknown(), true
		}
		return value{}, false
	}
}

func (g *generator) serviceLink(name string) bool {
	if !serviceLinkName().MatchString(name) {
		return false
	}
	for _, p := range g.serviceLinkPrefixes() {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// serviceLinkPrefixes: KUBERNETES_ always (the kubelet adds the master
// service's variables whatever enableServiceLinks says); with service
// links enabled, the owner's prefixes, or every name.
func (g *generator) serviceLinkPrefixes() []string {
	if s := g.w.spec.EnableServiceLinks; s != nil && !*s {
		return []string{"KUBERNETES_"}
	}
	if len(g.o.ServiceLinkPrefixes) == 0 {
		return []string{""}
	}
	return append([]string{"KUBERNETES_"}, g.o.ServiceLinkPrefixes...)
}

// valueFrom returns what a valueFrom source gives; ok is false when the
// variable is left out (an optional key that is missing).
func (g *generator) valueFrom(field string, s *envVarSource) (value, bool, error) {
	switch {
	case s.FieldRef != nil:
		return g.fieldRef(field, s.FieldRef.FieldPath)
	case s.ConfigMapKeyRef != nil:
		r := s.ConfigMapKeyRef
		data, ok := lookupNS(g.in.ConfigMaps, g.w.Namespace, r.Name)
		if !ok {
			g.warnf("%s.valueFrom.configMapKeyRef: ConfigMap %q not given; its value is not pinned", field, r.Name)
			return unknown(), true, nil
		}
		v, ok := data[r.Key]
		if !ok {
			if r.Optional != nil && *r.Optional {
				return value{}, false, nil
			}
			return value{}, false, fmt.Errorf("%s.valueFrom.configMapKeyRef: ConfigMap %q has no key %q", field, r.Name, r.Key)
		}
		return literal(v), true, nil
	case s.SecretKeyRef != nil, len(s.ResourceFieldRef) > 0, len(s.FileKeyRef) > 0:
		// Known only on the node; a Secret's value never enters the policy.
		return unknown(), true, nil
	}
	return value{}, false, fmt.Errorf("%s.valueFrom: no source", field)
}

var labelRef = sync.OnceValue(func() *regexp.Regexp {
	return regexp.MustCompile(`^metadata\.(labels|annotations)\['([^']+)'\]$`)
})

func (g *generator) fieldRef(field, path string) (value, bool, error) {
	switch path {
	case "metadata.name":
		if g.w.PodName.Regex == "" {
			return literal(g.w.PodName.Exact), true, nil
		}
		return unknown(), true, nil
	case "metadata.namespace":
		return literal(g.w.Namespace), true, nil
	case "spec.serviceAccountName":
		sa := g.w.spec.ServiceAccountName
		if sa == "" {
			sa = "default"
		}
		return literal(sa), true, nil
	case "metadata.uid", "spec.nodeName", "status.hostIP", "status.hostIPs", "status.podIP", "status.podIPs", "metadata.labels", "metadata.annotations":
		return unknown(), true, nil
	}
	if m := labelRef().FindStringSubmatch(path); m != nil {
		if v, ok := g.w.meta.Labels[m[2]]; ok && m[1] == "labels" {
			return literal(v), true, nil
		}
		return unknown(), true, nil
	}
	return value{}, false, fmt.Errorf("%s.valueFrom.fieldRef.fieldPath: %q is not a field the kubelet exposes", field, path)
}

// processArgs merges the container's command and args, expanded against
// its environment, with the image's entrypoint and cmd, as containerd's
// WithProcessArgs does (Kubernetes docs, "Notes" on command and args):
// no command and no args: entrypoint + cmd; args only: entrypoint + args;
// command (with or without args): command + args, the image ignored. An
// entrypoint of one empty string counts as none.
func processArgs(c *container, img *ImageConfig, lookup func(string) (value, bool)) ([]value, error) {
	var command, args []value
	for _, s := range c.Command {
		command = append(command, expand(s, lookup))
	}
	for _, s := range c.Args {
		args = append(args, expand(s, lookup))
	}
	if len(command) == 0 {
		if len(args) == 0 {
			for _, s := range img.Cmd {
				args = append(args, literal(s))
			}
		}
		if !(len(img.Entrypoint) == 1 && img.Entrypoint[0] == "") {
			for _, s := range img.Entrypoint {
				command = append(command, literal(s))
			}
		}
	}
	out := append(command, args...)
	if len(out) == 0 {
		return nil, fmt.Errorf("containers[%s]: no command: the pod gives none and the image has neither entrypoint nor cmd", c.Name)
	}
	return out, nil
}

// containerdEnv is the environment containerd writes for the container:
// its default PATH, HOSTNAME (the pod's hostname), the image's variables,
// then the kubelet's, each replacing an earlier one of the same name; and
// TERM=xterm for a tty.
func containerdEnv(img *ImageConfig, hostname value, kubelet *envVars, tty bool) *envVars {
	env := newEnvVars()
	env.set("PATH", literal("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"))
	if tty {
		env.set("TERM", literal("xterm"))
	}
	env.set("HOSTNAME", hostname)
	for _, kv := range img.Env {
		name, v, _ := strings.Cut(kv, "=")
		env.set(name, literal(v))
	}
	for _, n := range kubelet.names {
		env.set(n, kubelet.values[n])
	}
	return env
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

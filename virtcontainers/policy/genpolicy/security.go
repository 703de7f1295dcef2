package genpolicy

import (
	_ "embed"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

//go:embed pinned.rego
var pinnedRego string

// defaultCaps are containerd's default spec capabilities (pkg/oci
// defaultUnixCaps), which the CRI starts every unprivileged container from.
var defaultCaps = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
	"CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
	"CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}

// secContext is a container's effective security settings: its own
// securityContext over the pod's (Kubernetes' precedence).
type secContext struct {
	privileged      bool
	noNewPrivileges bool
	readonlyRootfs  bool
	seccomp         string // RuntimeDefault, Unconfined, Localhost, "" (unset)
	procMount       string
	runAsUser       *int64
	runAsGroup      *int64
	caps            *capabilities
}

func effective(pod *podSecurityContext, c *securityContext) secContext {
	var s secContext
	if pod != nil {
		s.runAsUser, s.runAsGroup = pod.RunAsUser, pod.RunAsGroup
		if pod.SeccompProfile != nil {
			s.seccomp = pod.SeccompProfile.Type
		}
	}
	if c != nil {
		s.privileged = c.Privileged != nil && *c.Privileged
		s.noNewPrivileges = c.AllowPrivilegeEscalation != nil && !*c.AllowPrivilegeEscalation
		s.readonlyRootfs = c.ReadOnlyRootFilesystem != nil && *c.ReadOnlyRootFilesystem
		if c.SeccompProfile != nil {
			s.seccomp = c.SeccompProfile.Type
		}
		if c.ProcMount != nil {
			s.procMount = *c.ProcMount
		}
		if c.RunAsUser != nil {
			s.runAsUser = c.RunAsUser
		}
		if c.RunAsGroup != nil {
			s.runAsGroup = c.RunAsGroup
		}
		s.caps = c.Capabilities
	}
	if s.privileged {
		// containerd applies no seccomp profile to a privileged container.
		s.seccomp = "any"
	}
	return s
}

// containerCaps follows containerd's CRI WithCapabilities: from the
// default set, add ALL, then drop ALL, then add and drop the named ones
// (upper-cased, CAP_ prefixed). any is true when ALL is added: the set is
// then the host kernel's, which the generator cannot know.
func containerCaps(sc secContext) (caps []string, any bool) {
	caps = slices.Clone(defaultCaps)
	if sc.caps == nil {
		return caps, false
	}
	if slices.Contains(sc.caps.Add, "ALL") {
		any = true
	}
	if slices.Contains(sc.caps.Drop, "ALL") {
		caps = nil
	}
	for _, c := range sc.caps.Add {
		if c == "ALL" {
			continue
		}
		c = "CAP_" + strings.ToUpper(c)
		if !slices.Contains(caps, c) {
			caps = append(caps, c)
		}
	}
	for _, c := range sc.caps.Drop {
		c = "CAP_" + strings.ToUpper(c)
		caps = slices.DeleteFunc(caps, func(x string) bool { return x == c })
	}
	if caps == nil {
		caps = []string{}
	}
	return caps, any
}

// user pins uid and gid where they are known without the image's
// /etc/passwd: runAsUser/runAsGroup, a numeric image USER, root by default.
// Supplementary groups: the pod's supplementalGroups and fsGroup (the
// kubelet adds it); the process's own gid is always allowed there too.
func (g *generator) user(e map[string]any, c *container, img *ImageConfig, sc secContext) error {
	uidKnown, gidKnown := false, false
	var uid, gid int64
	if sc.runAsUser != nil {
		uid, uidKnown = *sc.runAsUser, true
	}
	imgUser, imgGroup, _ := strings.Cut(img.User, ":")
	if !uidKnown {
		if imgUser == "" {
			uid, uidKnown = 0, true
		} else if n, err := strconv.ParseInt(imgUser, 10, 64); err == nil {
			uid, uidKnown = n, true
		} else {
			g.warnf("containers[%s]: image user %q is a name; its uid and gid are not pinned (set runAsUser and runAsGroup to pin them)", c.Name, img.User)
		}
	}
	if sc.runAsGroup != nil {
		gid, gidKnown = *sc.runAsGroup, true
	} else if sc.runAsUser == nil && imgGroup != "" {
		if n, err := strconv.ParseInt(imgGroup, 10, 64); err == nil {
			gid, gidKnown = n, true
		}
	} else if uidKnown && uid == 0 && sc.runAsUser == nil && imgUser == "" {
		gid, gidKnown = 0, true // root's group, in every image's /etc/passwd
	}
	if uidKnown {
		e["uid"] = uid
	}
	if gidKnown {
		e["gid"] = gid
	} else if uidKnown {
		g.warnf("containers[%s]: the gid comes from the image's /etc/passwd and is not pinned (set runAsGroup to pin it)", c.Name)
	}
	e["gids"] = podGroups(g.w.spec.SecurityContext)
	return nil
}

func podGroups(pc *podSecurityContext) []int64 {
	out := []int64{}
	if pc == nil {
		return out
	}
	out = append(out, pc.SupplementalGroups...)
	if pc.FSGroup != nil {
		out = append(out, *pc.FSGroup)
	}
	return out
}

// SplitCommand splits a command line into words the way a POSIX shell
// would, without expansions: blanks separate words, '...' and "..." quote
// (\ escapes in "" and outside quotes). "sh -c 'echo hi'" is
// ["sh", "-c", "echo hi"].
func SplitCommand(line string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	for i := 0; i < len(line); i++ {
		ch := line[i]
		switch {
		case ch == ' ' || ch == '\t':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		case ch == '\'':
			end := strings.IndexByte(line[i+1:], '\'')
			if end < 0 {
				return nil, fmt.Errorf("unterminated ' in %q", line)
			}
			cur.WriteString(line[i+1 : i+1+end])
			i += 1 + end
			inWord = true
		case ch == '"':
			j := i + 1
			for ; j < len(line) && line[j] != '"'; j++ {
				if line[j] == '\\' && j+1 < len(line) && strings.IndexByte("\"\\$`", line[j+1]) >= 0 {
					j++
				}
				cur.WriteByte(line[j])
			}
			if j >= len(line) {
				return nil, fmt.Errorf("unterminated \" in %q", line)
			}
			i = j
			inWord = true
		case ch == '\\' && i+1 < len(line):
			i++
			cur.WriteByte(line[i])
			inWord = true
		default:
			cur.WriteByte(ch)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	if len(words) == 0 {
		return nil, fmt.Errorf("empty command")
	}
	return words, nil
}

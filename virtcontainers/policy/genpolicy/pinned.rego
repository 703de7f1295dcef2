
# ---------------------------------------------------------------------------
# The rules below are the same for every generated policy; `pod` above is
# what the generator predicted containerd's CRI will write for this pod.
# Each request is allowed only when every check holds (positive checks: an
# absent field fails them). The `reasons` rules only explain a denial: the
# agent reads reasons.<Rule> when <Rule> is not true and puts the messages
# in the error the host sees. They print variable names and short hashes,
# never environment values.
# Every entry of `pod` has every key; null means "not pinned" (OPA's type
# checker refuses a reference to a key no entry has).
# ---------------------------------------------------------------------------

default HealthRequest := true
default EventsRequest := true
default DestroySandboxRequest := true
default CreateTaskRequest := true
default StartRequest := true
default DeleteRequest := true
default StateRequest := true
default PidsRequest := true
default PauseRequest := true
default ResumeRequest := true
default KillRequest := true
default ResizePtyRequest := true
default CloseIORequest := true
default WaitRequest := true
default StatsRequest := true
default ConnectRequest := true
default ShutdownRequest := true
default GetResourceRequest := true
default GetTokenRequest := true
default GetEvidenceRequest := true
default SetPolicyRequest := false
default CheckpointTaskRequest := false

# Streams: an exec's (which the policy allowed to exist); the containers'
# own output only when the owner allowed logs.
default ReadStreamRequest := false

ReadStreamRequest if input.exec_id != ""

ReadStreamRequest if pod.allow_logs == true

default WriteStreamRequest := false

WriteStreamRequest if input.exec_id != ""

default PortForwardRequest := false

# The pod's declared file volumes, kept in sync (the guest refuses an
# update for any other destination), and its termination messages.
default UpdateVolumeRequest := true
default ReadTerminationMessageRequest := true

PortForwardRequest if input.port in pod.ports

# --- the sandbox ---

default SetupSandboxRequest := false

SetupSandboxRequest if {
	value_ok(pod.hostname, object.get(input, "hostname", ""))
	sysctls_ok(object.get(input, "sysctls", {}), pod.sysctls)
	object.get(input, "policy", "") == ""
}

reasons.SetupSandboxRequest contains msg if {
	got := object.get(input, "hostname", "")
	not value_ok(pod.hostname, got)
	msg := sprintf("sandbox.hostname: received %q, expected %s", [got, describe(pod.hostname)])
}

reasons.SetupSandboxRequest contains msg if {
	got := object.get(input, "sysctls", {})
	not sysctls_ok(got, pod.sysctls)
	msg := sprintf("sandbox.sysctls: received %v, expected %v", [got, pod.sysctls])
}

# sysctls: the pod's, plus those containerd's CRI adds by default to a pod
# with its own network (enable_unprivileged_ports, enable_unprivileged_icmp),
# each with containerd's value.
sysctls_ok(got, want) if {
	every k, v in want {
		got[k] == v
	}
	every k, v in got {
		sysctl_allowed(k, v, want)
	}
}

sysctl_allowed(k, v, want) if want[k] == v

sysctl_allowed(k, v, want) if {
	not want[k]
	pod.runtime_sysctls[k] == v
}

reasons.SetupSandboxRequest contains "sandbox.policy: the host may not propose a policy" if object.get(input, "policy", "") != ""

# --- containers ---

spec := object.get(input, "spec", {})

proc := object.get(spec, "process", {})

linux := object.get(spec, "linux", {})

spec_annotations := object.get(spec, "annotations", {})

container_type := object.get(spec_annotations, "io.kubernetes.cri.container-type", "")

container_name := object.get(spec_annotations, "io.kubernetes.cri.container-name", "")

expected := pod.sandbox if container_type == "sandbox"

expected := pod.containers[container_name] if container_type == "container"

label := "sandbox" if container_type == "sandbox"

label := sprintf("containers[%s]", [container_name]) if container_type == "container"

default PrepareContainerRequest := false

PrepareContainerRequest if {
	c := expected
	identity_ok
	image_ok(c)
	args_ok(c)
	env_ok(c)
	cwd_ok(c)
	user_ok(c)
	caps_ok(c)
	privileged_ok(c)
	nnp_ok(c)
	rootfs_ok(c)
	seccomp_ok(c)
	sysctls_ok(object.get(linux, "sysctl", {}), c.sysctls)
	namespaces_ok(c)
	mounts_ok(c)
	disk_volumes_ok(c)
}

reasons.PrepareContainerRequest contains msg if {
	not expected
	msg := sprintf("container %q of type %q is not in the pod (containers: %s)", [container_name, container_type, concat(", ", object.keys(pod.containers))])
}

identity_ok if {
	value_ok(pod.name, object.get(spec_annotations, "io.kubernetes.cri.sandbox-name", ""))
	object.get(spec_annotations, "io.kubernetes.cri.sandbox-namespace", "") == pod.namespace
	object.get(input, "sandbox_container", false) == (container_type == "sandbox")
}

reasons.PrepareContainerRequest contains msg if {
	got := object.get(spec_annotations, "io.kubernetes.cri.sandbox-name", "")
	not value_ok(pod.name, got)
	msg := sprintf("pod.name: received %q, expected %s", [got, describe(pod.name)])
}

reasons.PrepareContainerRequest contains msg if {
	got := object.get(spec_annotations, "io.kubernetes.cri.sandbox-namespace", "")
	got != pod.namespace
	msg := sprintf("pod.namespace: received %q, expected %q", [got, pod.namespace])
}

reasons.PrepareContainerRequest contains msg if {
	expected
	object.get(input, "sandbox_container", false) != (container_type == "sandbox")
	msg := sprintf("%s: sandbox_container is %v for a container of type %q", [label, object.get(input, "sandbox_container", false), container_type])
}

# image: the CRI image-name annotation, and with a guest pull the
# reference pulled, which must carry the digest the generator resolved.
image_ok(c) if {
	image_name_ok(c)
	pull_ok(c)
}

image_name_ok(c) if c.images == null

image_name_ok(c) if object.get(spec_annotations, c.image_annotation, "") in c.images

pull_ok(c) if not input.rootfs.guest_pull

pull_ok(c) if input.rootfs.guest_pull.image in c.pull_images

reasons.PrepareContainerRequest contains msg if {
	c := expected
	not image_name_ok(c)
	msg := sprintf("%s.image: received %q, expected one of %v", [label, object.get(spec_annotations, c.image_annotation, ""), c.images])
}

reasons.PrepareContainerRequest contains msg if {
	c := expected
	not pull_ok(c)
	msg := sprintf("%s.image: guest pull of %q, expected one of %v", [label, object.get(input.rootfs.guest_pull, "image", ""), c.pull_images])
}

# args: exact, or a pattern where a value is only known on the node.
args_ok(c) if c.args == null

args_ok(c) if argv_match(c.args, object.get(proc, "args", []))

argv_match(want, got) if {
	count(want) == count(got)
	every i, w in want {
		value_ok(w, got[i])
	}
}

reasons.PrepareContainerRequest contains msg if {
	c := expected
	not args_ok(c)
	msg := sprintf("%s.args: received %v, expected %s", [label, object.get(proc, "args", []), c.args_text])
}

# env: every variable is expected (by name, with its value) or a service
# link; every expected variable that is not optional is present.
env := object.get(proc, "env", [])

env_ok(c) if c.env == null

env_ok(c) if {
	every e in env {
		env_entry_ok(c, e)
	}
	every n, w in c.env {
		env_present_ok(n, w)
	}
}

env_name(e) := substring(e, 0, indexof(e, "=")) if indexof(e, "=") > 0

env_value(e) := substring(e, indexof(e, "=") + 1, -1)

env_entry_ok(c, e) if value_ok(c.env[env_name(e)], env_value(e))

env_entry_ok(c, e) if {
	n := env_name(e)
	not c.env[n]
	service_link(n)
	regex.match(service_link_value, env_value(e))
}

env_present_ok(_, w) if w.optional == true

env_present_ok(n, _) if {
	some e in env
	env_name(e) == n
}

# What the kubelet derives from the cluster's Services (enableServiceLinks;
# KUBERNETES_* always): name and value shapes, and with prefixes listed
# only those services.
service_link(n) if {
	regex.match(`^[A-Z_][A-Z0-9_]*_(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?|PORT(_[0-9]+_(TCP|UDP|SCTP)(_PROTO|_PORT|_ADDR)?)?)$`, n)
	some p in pod.service_link_prefixes
	startswith(n, p)
}

service_link_value := `^([0-9]{1,5}|[0-9.]+|[0-9a-fA-F:]+|tcp|udp|sctp|(tcp|udp|sctp)://([0-9.]+|\[[0-9a-fA-F:]+\]):[0-9]{1,5})$`

short_hash(v) := substring(crypto.sha256(v), 0, 8)

reasons.PrepareContainerRequest contains msg if {
	c := expected
	some e in env
	not env_entry_ok(c, e)
	not c.env[env_name(e)]
	msg := sprintf("%s.env: %q (value sha256:%s) not allowed", [label, env_label(e), short_hash(env_value(e))])
}

reasons.PrepareContainerRequest contains msg if {
	c := expected
	some e in env
	w := c.env[env_name(e)]
	not value_ok(w, env_value(e))
	msg := sprintf("%s.env: %q has value sha256:%s, expected %s", [label, env_name(e), short_hash(env_value(e)), describe_secret(w)])
}

reasons.PrepareContainerRequest contains msg if {
	c := expected
	some n, w in c.env
	not env_present_ok(n, w)
	msg := sprintf("%s.env: %q missing", [label, n])
}

env_label(e) := env_name(e)

env_label(e) := "<entry without =>" if indexof(e, "=") <= 0

describe_secret(w) := sprintf("sha256:%s", [short_hash(w.exact)]) if is_string(w.exact)

describe_secret(w) := sprintf("a value matching %s", [w.regex]) if is_string(w.regex)

cwd_ok(c) if c.cwd == null

cwd_ok(c) if object.get(proc, "cwd", "") == c.cwd

reasons.PrepareContainerRequest contains msg if {
	c := expected
	not cwd_ok(c)
	msg := sprintf("%s.cwd: received %q, expected %q", [label, object.get(proc, "cwd", ""), c.cwd])
}

# user: uid and gid where the generator knows them; supplementary groups
# only the pod's, or the process's own gid.
user := object.get(proc, "user", {})

user_ok(c) if {
	uid_ok(c)
	gid_ok(c)
	every g in object.get(user, "additionalGids", []) {
		gid_allowed(c, g)
	}
}

uid_ok(c) if c.uid == null

uid_ok(c) if object.get(user, "uid", 0) == c.uid

gid_ok(c) if c.gid == null

gid_ok(c) if object.get(user, "gid", 0) == c.gid

gid_allowed(c, g) if g in c.gids

gid_allowed(_, g) if g == object.get(user, "gid", 0)

reasons.PrepareContainerRequest contains msg if {
	c := expected
	not uid_ok(c)
	msg := sprintf("%s.user.uid: received %v, expected %v", [label, object.get(user, "uid", 0), c.uid])
}

reasons.PrepareContainerRequest contains msg if {
	c := expected
	not gid_ok(c)
	msg := sprintf("%s.user.gid: received %v, expected %v", [label, object.get(user, "gid", 0), c.gid])
}

reasons.PrepareContainerRequest contains msg if {
	c := expected
	some g in object.get(user, "additionalGids", [])
	not gid_allowed(c, g)
	msg := sprintf("%s.user.additionalGids: %v not allowed (expected within %v)", [label, g, c.gids])
}

# capabilities: the object present (without it the OCI runtime keeps its
# own); bounding, effective and permitted exactly the predicted set (or
# within it, for the sandbox); inheritable and ambient within it.
caps_ok(c) if c.caps_any == true

caps_ok(c) if {
	is_object(proc.capabilities)
	want := {x | some x in c.caps}
	every s in ["bounding", "effective", "permitted"] {
		cap_set_ok(c, {x | some x in object.get(proc.capabilities, s, [])}, want)
	}
	every s in ["inheritable", "ambient"] {
		{x | some x in object.get(proc.capabilities, s, [])} - want == set()
	}
}

cap_set_ok(c, got, want) if {
	c.caps_within == true
	got - want == set()
}

cap_set_ok(c, got, want) if {
	c.caps_within == false
	got == want
}

reasons.PrepareContainerRequest contains msg if {
	c := expected
	not caps_ok(c)
	not is_object(object.get(proc, "capabilities", null))
	msg := sprintf("%s.capabilities: missing, expected %v", [label, c.caps])
}

reasons.PrepareContainerRequest contains msg if {
	c := expected
	not caps_ok(c)
	extra := {x | some s in cap_sets; some x in object.get(object.get(proc, "capabilities", {}), s, []); not x in c.caps}
	count(extra) > 0
	msg := sprintf("%s.capabilities: %s not allowed", [label, concat(", ", sort(extra))])
}

reasons.PrepareContainerRequest contains msg if {
	c := expected
	not caps_ok(c)
	c.caps_within == false
	missing := {x | some s in ["bounding", "effective", "permitted"]; some x in c.caps; not x in object.get(object.get(proc, "capabilities", {}), s, [])}
	count(missing) > 0
	msg := sprintf("%s.capabilities: %s missing", [label, concat(", ", sort(missing))])
}

cap_sets := ["bounding", "effective", "permitted", "inheritable", "ambient"]

# privileged: an unprivileged container has no device nodes but its
# volumeDevices (block_devices), containerd's default device cgroup plus a
# rule for each of those, and the kubelet's masked and read-only /proc paths.
privileged_ok(c) if c.privileged == true

privileged_ok(c) if {
	c.privileged == false
	every d in object.get(linux, "devices", []) {
		d.type == "b"
		d.path in c.block_devices
	}
	device_cgroup_ok(object.get(object.get(linux, "resources", {}), "devices", []))
	every p in object.get(c, "masked_paths", []) {
		p in object.get(linux, "maskedPaths", [])
	}
	every p in object.get(c, "readonly_paths", []) {
		p in object.get(linux, "readonlyPaths", [])
	}
}

reasons.PrepareContainerRequest contains msg if {
	c := expected
	not privileged_ok(c)
	msg := sprintf("%s.privileged: received a privileged spec (device nodes %d, device cgroup, masked paths %v, read-only paths %v), expected unprivileged", [label, count(object.get(linux, "devices", [])), object.get(linux, "maskedPaths", []), object.get(linux, "readonlyPaths", [])])
}

device_cgroup_ok(devices) if {
	deny_all(devices[0])
	every d in array.slice(devices, 1, count(devices)) {
		device_rule_ok(d)
	}
}

deny_all(d) if {
	d.allow == false
	d.access == "rwm"
	object.get(d, "type", "a") == "a"
	object.keys(d) - {"allow", "access", "type"} == set()
}

device_rule_ok(d) if d.allow == false

device_rule_ok(d) if d in default_device_rules

# The rule containerd adds for a volumeDevices entry: that block device.
device_rule_ok(d) if {
	d.allow == true
	d.type == "b"
	object.keys(d) - {"allow", "type", "major", "minor", "access"} == set()
	some n in object.get(linux, "devices", [])
	n.type == "b"
	n.major == d.major
	n.minor == d.minor
}

default_device_rules := [
	{"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
	{"allow": true, "type": "c", "major": 1, "minor": 8, "access": "rwm"},
	{"allow": true, "type": "c", "major": 1, "minor": 7, "access": "rwm"},
	{"allow": true, "type": "c", "major": 5, "minor": 0, "access": "rwm"},
	{"allow": true, "type": "c", "major": 1, "minor": 5, "access": "rwm"},
	{"allow": true, "type": "c", "major": 1, "minor": 9, "access": "rwm"},
	{"allow": true, "type": "c", "major": 5, "minor": 1, "access": "rwm"},
	{"allow": true, "type": "c", "major": 136, "access": "rwm"},
	{"allow": true, "type": "c", "major": 5, "minor": 2, "access": "rwm"},
]

# allowPrivilegeEscalation: false and readOnlyRootFilesystem: true hold;
# the host may only be stricter than the pod.
nnp_ok(c) if c.no_new_privileges == false

nnp_ok(c) if object.get(proc, "noNewPrivileges", false) == true

reasons.PrepareContainerRequest contains msg if {
	c := expected
	not nnp_ok(c)
	msg := sprintf("%s.noNewPrivileges: received false, expected true (allowPrivilegeEscalation: false)", [label])
}

rootfs_ok(c) if c.readonly_rootfs == false

rootfs_ok(c) if object.get(object.get(spec, "root", {}), "readonly", false) == true

reasons.PrepareContainerRequest contains msg if {
	c := expected
	not rootfs_ok(c)
	msg := sprintf("%s.root.readonly: received false, expected true (readOnlyRootFilesystem)", [label])
}

# seccomp: never a user-space notifier (the host would answer syscalls);
# RuntimeDefault and Localhost need a profile that does not allow by
# default; Unconfined none.
seccomp := object.get(linux, "seccomp", null)

seccomp_ok(c) if {
	not seccomp.listenerPath
	seccomp_mode_ok(c.seccomp)
}

seccomp_mode_ok("") := true

seccomp_mode_ok("any") := true

seccomp_mode_ok("Unconfined") if seccomp == null

seccomp_mode_ok(m) if {
	m in {"RuntimeDefault", "Localhost"}
	is_object(seccomp)
	seccomp.defaultAction != "SCMP_ACT_ALLOW"
}

reasons.PrepareContainerRequest contains msg if {
	c := expected
	not seccomp_ok(c)
	msg := sprintf("%s.seccomp: received %v, expected %q", [label, object.get(object.get(linux, "seccomp", {}), "defaultAction", "none"), c.seccomp])
}

reasons.PrepareContainerRequest contains msg if {
	c := expected
	got := object.get(linux, "sysctl", {})
	not sysctls_ok(got, c.sysctls)
	msg := sprintf("%s.sysctls: received %v, expected %v", [label, got, c.sysctls])
}

# namespaces: by type, "new" (no path), "path" (the pod's), "absent", or
# "new_optional" (the cgroup namespace, absent on cgroup v1 hosts).
namespaces := object.get(linux, "namespaces", [])

namespaces_ok(c) if {
	every n in namespaces {
		ns_entry_ok(c.namespaces, n)
	}
	every t, mode in c.namespaces {
		ns_present_ok(t, mode)
	}
}

ns_entry_ok(want, n) if {
	want[n.type] in {"new", "new_optional"}
	object.get(n, "path", "") == ""
}

ns_entry_ok(want, n) if {
	want[n.type] == "path"
	object.get(n, "path", "") != ""
}

ns_has(t) if {
	some n in namespaces
	n.type == t
}

ns_present_ok(t, "absent") if not ns_has(t)

ns_present_ok(_, "new_optional") := true

ns_present_ok(t, mode) if {
	mode in {"new", "path"}
	ns_has(t)
}

reasons.PrepareContainerRequest contains msg if {
	c := expected
	some n in namespaces
	not ns_entry_ok(c.namespaces, n)
	msg := sprintf("%s.namespaces.%s: received path %q, expected %s", [label, n.type, object.get(n, "path", ""), object.get(c.namespaces, n.type, "absent")])
}

reasons.PrepareContainerRequest contains msg if {
	c := expected
	some t, mode in c.namespaces
	not ns_present_ok(t, mode)
	msg := sprintf("%s.namespaces.%s: expected %s", [label, t, mode])
}

# mounts: each at a declared destination, of the declared kind (type and
# source pattern) and read-only where declared; the pod's volumes present.
mounts := object.get(spec, "mounts", [])

mounts_ok(c) if {
	every m in mounts {
		mount_ok(c, m)
	}
	every w in c.mounts {
		mount_present_ok(w)
	}
}

mount_ok(c, m) if {
	some w in c.mounts
	mount_matches(w, m)
}

mount_matches(w, m) if {
	w.destination == m.destination
	object.get(m, "type", "") in w.types
	regex.match(w.source, object.get(m, "source", ""))
	ro_ok(w, object.get(m, "options", []))
}

ro_ok(w, _) if w.ro == null

ro_ok(w, opts) if {
	w.ro == true
	"ro" in opts
}

ro_ok(w, opts) if {
	w.ro == false
	not "ro" in opts
}

mount_present_ok(w) if w.required == false

mount_present_ok(w) if {
	some m in mounts
	mount_matches(w, m)
}

reasons.PrepareContainerRequest contains msg if {
	c := expected
	some m in mounts
	not mount_ok(c, m)
	msg := sprintf("%s.mounts[%s]: %s of %q (options %v) not declared%s", [label, object.get(m, "destination", ""), object.get(m, "type", ""), object.get(m, "source", ""), object.get(m, "options", []), declared_at(c, object.get(m, "destination", ""))])
}

declared_at(c, d) := sprintf(" (declared there: %s)", [concat(", ", [w.what | some w in c.mounts; w.destination == d])]) if {
	some w in c.mounts
	w.destination == d
}

declared_at(c, d) := "" if {
	not d in {w.destination | some w in c.mounts}
}

reasons.PrepareContainerRequest contains msg if {
	c := expected
	some w in c.mounts
	not mount_present_ok(w)
	msg := sprintf("%s.mounts[%s]: missing (%s)", [label, w.destination, w.what])
}

# disk_volumes: a hot-plugged read-only disk only for a mount declared as
# an image volume, and one for each image volume the spec mounts whole
# (else the container would get an empty directory for the image).
disk_volumes := object.get(input, "disk_volumes", [])

disk_volumes_ok(c) if {
	every d in disk_volumes {
		disk_volume_ok(c, d)
	}
	every b in object.get(input, "block_volumes", []) {
		object.get(b, "path", "") in c.block_devices
	}
	every w in c.mounts {
		image_volume_backed(w)
	}
}

disk_volume_ok(c, d) if {
	some w in c.mounts
	w.destination == object.get(d, "destination", "")
	object.get(w, "image_volume", false) == true
}

image_volume_backed(w) if object.get(w, "disk_required", false) == false

image_volume_backed(w) if not w.destination in {m.destination | some m in mounts}

image_volume_backed(w) if {
	some d in disk_volumes
	object.get(d, "destination", "") == w.destination
}

reasons.PrepareContainerRequest contains msg if {
	c := expected
	some b in object.get(input, "block_volumes", [])
	not object.get(b, "path", "") in c.block_devices
	msg := sprintf("%s.block_volumes[%s]: a disk for a device not declared in volumeDevices %v", [label, object.get(b, "path", ""), c.block_devices])
}

reasons.PrepareContainerRequest contains msg if {
	c := expected
	some d in disk_volumes
	not disk_volume_ok(c, d)
	msg := sprintf("%s.disk_volumes[%s]: a disk for a mount not declared as an image volume", [label, object.get(d, "destination", "")])
}

reasons.PrepareContainerRequest contains msg if {
	c := expected
	some w in c.mounts
	not image_volume_backed(w)
	msg := sprintf("%s.mounts[%s]: %s comes without its disk (disk_volumes)", [label, w.destination, w.what])
}

# --- exec ---

# An allowed argv for a container whose own args match the process the
# exec copies (the guest's container_process fact), in a process that is
# otherwise the container's own.
default ExecProcessRequest := false

ExecProcessRequest if {
	exec_argv_allowed
	exec_same_process
}

exec_argv_allowed if pod.allow_all_exec == true

exec_argv_allowed if {
	some c in exec_containers
	input.spec.args in c.exec
}

exec_containers contains c if {
	some c in pod.containers
	argv_match(c.args, object.get(input.container_process, "args", []))
}

exec_may_differ := {"args", "terminal", "consoleSize", "env"}

exec_same_process if {
	object.remove(input.spec, exec_may_differ) == object.remove(input.container_process, exec_may_differ)
	exec_same_env
}

exec_same_env if object.get(input.spec, "env", []) == object.get(input.container_process, "env", [])

exec_same_env if {
	input.spec.terminal == true
	without_term(object.get(input.spec, "env", [])) == without_term(object.get(input.container_process, "env", []))
	every e in object.get(input.spec, "env", []) {
		term_xterm_only(e)
	}
}

without_term(e) := [x | some x in e; not startswith(x, "TERM=")]

term_xterm_only(e) if not startswith(e, "TERM=")

term_xterm_only("TERM=xterm")

reasons.ExecProcessRequest contains msg if {
	not exec_argv_allowed
	names := [c.name | some c in exec_containers]
	msg := sprintf("exec: %v is not allowed in %v (allowed: %v)", [object.get(input.spec, "args", []), names, [c.exec | some c in exec_containers]])
}

reasons.ExecProcessRequest contains "exec: the process differs from the container's own beyond args, terminal and TERM" if {
	exec_argv_allowed
	not exec_same_process
}

# --- updates ---

default UpdateTaskRequest := false

UpdateTaskRequest if count(object.get(input.resources, "devices", [])) == 0

UpdateTaskRequest if device_cgroup_ok(input.resources.devices)

# --- matching ---

value_ok(w, got) if {
	is_string(w.exact)
	got == w.exact
}

value_ok(w, got) if {
	is_string(w.regex)
	regex.match(w.regex, got)
}

value_ok(w, _) if w.any == true

describe(w) := sprintf("%q", [w.exact]) if is_string(w.exact)

describe(w) := sprintf("a match of %s", [w.regex]) if is_string(w.regex)

describe(w) := "any value" if w.any == true

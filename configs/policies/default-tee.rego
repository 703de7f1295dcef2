# Default agent policy for confidential runtime classes. The host may run the
# pod's lifecycle, but not look inside it (no exec, no reading or writing
# container stdio, no replacing this policy) nor give a container more than
# an unprivileged Kubernetes container gets: no added capabilities, no
# device nodes or device-cgroup rules beyond containerd's defaults, no host
# or shared pid namespace, a read-only /sys. Pod owners ship their own copy
# in init-data (policy.rego) and list the commands exec may run below. The
# input of every rule is described in README.md next to this file.
package agent_policy

import rego.v1

# Commands the host may exec, as exact argv lists, e.g. [["cat", "/etc/hostname"]].
allowed_exec_argv := []

# Commands the host may exec, as lists of regular expressions, one per
# argument; each must match its whole argument, and the argv must have as
# many arguments as the list, e.g. [["ls", "-l|-la", "/tmp/[a-z]+"]].
allowed_exec_regex := []

# Guest loopback ports the host may reach with `kubectl port-forward`, e.g.
# [8080]. None by default: a port served on loopback can be one the pod
# keeps from the network on purpose (an admin or debug endpoint), and a
# forward carries the host's bytes to it. (The agent's own workload API,
# 127.0.0.1:8006, is never forwarded, whatever this list says.)
allowed_port_forward_ports := []

default HealthRequest := true
default SetupSandboxRequest := true
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

# The pod's own containers, through the workload API on the guest's
# loopback: the Key Broker Service decides which secrets this TEE may have;
# an owner may narrow what each path may fetch, e.g.
#   GetResourceRequest if input.path in {"default/key/app"}
default GetResourceRequest := true
default GetTokenRequest := true
default GetEvidenceRequest := true

# Kubelet file volumes (configMap, secret, projected, downwardAPI) kept in
# sync: the guest accepts an update only for a volume PrepareContainer
# brought (files[] show destination and mode, never content). An owner
# who wants a pod's volumes frozen at creation sets this to false.
default UpdateVolumeRequest := true

# The termination message a container wrote, read back when it exits so
# the kubelet can show it in the pod status: only a file the host sent
# empty (never a secret), at most 4096 bytes. The app writes it for the
# control plane; an owner who wants nothing back sets this to false.
default ReadTerminationMessageRequest := true

default SetPolicyRequest := false
default CheckpointTaskRequest := false
default ReadStreamRequest := false
default WriteStreamRequest := false

default PortForwardRequest := false

PortForwardRequest if input.port in allowed_port_forward_ports

# Containers: what containerd's CRI gives an unprivileged container.
default PrepareContainerRequest := false

PrepareContainerRequest if {
	capabilities_pinned(input.spec.process)
	no_device_nodes(input.spec)
	device_cgroup_pinned(input.spec.linux.resources.devices)
	namespaces_pinned(input.spec.linux.namespaces)
	every m in object.get(input.spec, "mounts", []) {
		mount_pinned(m)
	}
	every k, _ in object.get(input.spec.linux, "sysctl", {}) {
		namespaced_sysctl(k)
	}
}

# containerd's CRI sends a container's whole resources on an update: the
# device rules may stay what they were, never widen.
default UpdateTaskRequest := false

UpdateTaskRequest if count(object.get(input.resources, "devices", [])) == 0

UpdateTaskRequest if device_cgroup_pinned(input.resources.devices)

# Exec: an allowed argv, in a process that is the container's own.
default ExecProcessRequest := false

ExecProcessRequest if {
	exec_argv_allowed
	exec_same_process
}

exec_argv_allowed if input.spec.args in allowed_exec_argv

exec_argv_allowed if {
	some patterns in allowed_exec_regex
	count(patterns) == count(input.spec.args)
	every i, arg in input.spec.args {
		regex.match(sprintf("^(?:%s)$", [patterns[i]]), arg)
	}
}

# containerd builds an exec's process by copying the container's and
# replacing args (and terminal, with TERM=xterm in env for a terminal).
# Everything else (user, env, cwd, capabilities, noNewPrivileges,
# apparmorProfile, selinuxLabel, rlimits, oomScoreAdj, ...) must be the
# container's own, as the guest recorded it at PrepareContainer.
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

without_term(env) := [e | some e in env; not startswith(e, "TERM=")]

term_xterm_only(e) if not startswith(e, "TERM=")

term_xterm_only("TERM=xterm")

# The capabilities of containerd's default spec (pkg/oci defaultUnixCaps).
default_capabilities := {
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
	"CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
	"CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}

# Present (a process without capabilities keeps the runtime's own), and
# every set within the defaults.
capabilities_pinned(process) if {
	is_object(process.capabilities)
	every set in ["bounding", "effective", "inheritable", "permitted", "ambient"] {
		every c in object.get(process.capabilities, set, []) {
			c in default_capabilities
		}
	}
}

no_device_nodes(spec) if count(object.get(object.get(spec, "linux", {}), "devices", [])) == 0

# The device cgroup starts by denying everything, as containerd's default
# spec does; later rules deny, or allow one of the devices containerd's
# WithDefaultUnixDevices lists (which the OCI runtime allows anyway).
device_cgroup_pinned(devices) if {
	deny_all(devices[0])
	every d in array.slice(devices, 1, count(devices)) {
		device_rule_pinned(d)
	}
}

deny_all(d) if {
	d.allow == false
	d.access == "rwm"
	object.get(d, "type", "a") == "a"
	object.keys(d) - {"allow", "access", "type"} == set()
}

device_rule_pinned(d) if d.allow == false

device_rule_pinned(d) if d in default_device_rules

default_device_rules := [
	{"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"}, # /dev/null
	{"allow": true, "type": "c", "major": 1, "minor": 8, "access": "rwm"}, # /dev/random
	{"allow": true, "type": "c", "major": 1, "minor": 7, "access": "rwm"}, # /dev/full
	{"allow": true, "type": "c", "major": 5, "minor": 0, "access": "rwm"}, # /dev/tty
	{"allow": true, "type": "c", "major": 1, "minor": 5, "access": "rwm"}, # /dev/zero
	{"allow": true, "type": "c", "major": 1, "minor": 9, "access": "rwm"}, # /dev/urandom
	{"allow": true, "type": "c", "major": 5, "minor": 1, "access": "rwm"}, # /dev/console
	{"allow": true, "type": "c", "major": 136, "access": "rwm"}, # /dev/pts/*
	{"allow": true, "type": "c", "major": 5, "minor": 2, "access": "rwm"}, # /dev/ptmx
]

# The pod's own pid, ipc, uts and mount namespaces: none may be missing
# (the VM's, which the agent lives in: hostPID, hostIPC, hostNetwork pods).
# A path for ipc, uts or network names the pod's, which the guest
# substitutes. A pid path joins the pod's shared pid namespace
# (shareProcessNamespace), which the host cannot show the pod asked for:
# refused here, an owner's policy may allow it.
namespaces_pinned(namespaces) if {
	{"pid", "ipc", "uts", "mount"} - {n.type | some n in namespaces} == set()
	every n in namespaces {
		namespace_pinned(n)
	}
}

namespace_pinned(n) if n.type in {"ipc", "uts", "network"}

namespace_pinned(n) if {
	n.type in {"pid", "mount", "cgroup", "user", "time"}
	object.get(n, "path", "") == ""
}

# sysfs and cgroupfs read-only, as for an unprivileged container (writable,
# root in the container could unbind the VM's devices or rewrite cgroups).
mount_pinned(m) if not object.get(m, "type", "") in {"sysfs", "cgroup", "cgroup2"}

mount_pinned(m) if "ro" in object.get(m, "options", [])

# Sysctls that live in the container's own ipc namespace, and net.* (the
# guest drops those: the pod's network sysctls belong in SetupSandbox).
namespaced_sysctl(k) if startswith(k, "net.")

namespaced_sysctl(k) if startswith(k, "fs.mqueue.")

namespaced_sysctl(k) if k in {
	"kernel.shm_rmid_forced", "kernel.shmmax", "kernel.shmall", "kernel.shmmni",
	"kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem",
}

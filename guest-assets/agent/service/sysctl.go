package service

import "strings"

// Sysctls a pod may set. The guest kernel is the pod's own, but a host
// that could write any /proc/sys key would run code as guest root
// (kernel.core_pattern, kernel.modprobe) or weaken it (vm.*, fs.protected_*,
// kernel.kptr_restrict). So the list is what Kubernetes calls safe plus the
// keys that are namespaced there (network and IPC): what a pod may ask for
// on any node.
var (
	sysctlKeys = map[string]bool{
		"kernel.shm_rmid_forced": true,
		"kernel.shmmax":          true, "kernel.shmall": true, "kernel.shmmni": true,
		"kernel.msgmax": true, "kernel.msgmnb": true, "kernel.msgmni": true,
		"kernel.sem": true,
	}
	sysctlPrefixes = []string{"net.", "fs.mqueue."}
	// Not namespaced though under net.: the BPF JIT is the kernel's.
	sysctlDenyPrefixes = []string{"net.core.bpf_"}
)

// checkSysctl refuses a key outside the allow-list, naming it.
// The request's own Validate (virtcontainers/agent/api) has already checked
// the key's syntax and the value's length and lines, in the gate.
func checkSysctl(key string) error {
	k := strings.ReplaceAll(key, "/", ".")
	allowed := sysctlKeys[k]
	for _, p := range sysctlPrefixes {
		allowed = allowed || strings.HasPrefix(k, p)
	}
	for _, p := range sysctlDenyPrefixes {
		allowed = allowed && !strings.HasPrefix(k, p)
	}
	if !allowed {
		return invalid("sysctls["+key+"]", "not an allowed sysctl: a pod may set net.*, fs.mqueue.* and the IPC keys "+
			"kernel.shm_rmid_forced, kernel.shmmax, kernel.shmall, kernel.shmmni, kernel.msgmax, kernel.msgmnb, kernel.msgmni, kernel.sem; "+
			"remove %s from the pod's securityContext.sysctls", key)
	}
	return nil
}

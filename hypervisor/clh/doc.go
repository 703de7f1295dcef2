// Package clh drives Cloud Hypervisor (v53 REST API) as a hypervisor.VM.
//
// The driver starts `cloud-hypervisor --api-socket path=<state>/clh.sock`,
// waits for GET vmm.ping, sends a typed VmConfig with PUT vm.create, adds
// the pod's NICs with one PUT vm.add-net each (the tap, which lives in the
// pod's network namespace, goes to the VMM as an fd attached to the request
// with SCM_RIGHTS: Cloud Hypervisor takes fds no other way through its API;
// see addNICs) and then PUT vm.boot. The guest agent is reached through Cloud Hypervisor's hybrid
// vsock socket (<state>/vsock.sock). Confidential guests: AMD SEV-SNP
// (platform.sev_snp + payload.igvm, init-data digest bound as
// payload.host_data in hex) and Intel TDX (platform.tdx + payload.firmware;
// upstream has no MRCONFIGID field, so TDX with init-data is refused and
// belongs to the QEMU TDX runtime class).
//
// Testing: the cloud-hypervisor binary cannot be installed on the
// development machines, so the tests run against an in-process fake VMM
// that checks the name and JSON type of every request field against a
// transcription of the upstream OpenAPI schema
// (testdata/openapi-subset.json) and records the call sequence; the full
// Start/Stop/Wait path runs with the test binary standing in for
// cloud-hypervisor, which also reports the files of the descriptors it
// received. No real guest has booted with a NIC through this driver.
package clh

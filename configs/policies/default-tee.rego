# Default agent policy for confidential runtime classes. The host may run the
# pod's lifecycle but may not look inside it: no exec, no reading or writing
# container stdio, no replacing this policy. Pod owners ship their own copy
# in init-data (policy.rego) and list the commands exec may run below.
package agent_policy

import rego.v1

# Commands the host may exec, as exact argv lists, e.g. [["cat", "/etc/hostname"]].
allowed_exec_argv := []

# Commands the host may exec, as regular expressions matched against the argv
# joined by single spaces, e.g. ["^ls( -l)? /tmp$"].
allowed_exec_regex := []

default HealthRequest := true
default SetupSandboxRequest := true
default PrepareContainerRequest := true
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
default UpdateTaskRequest := true
default WaitRequest := true
default StatsRequest := true
default ConnectRequest := true
default ShutdownRequest := true

default SetPolicyRequest := false
default CheckpointTaskRequest := false
default ReadStreamRequest := false
default WriteStreamRequest := false

default ExecProcessRequest := false

ExecProcessRequest if input.spec.args in allowed_exec_argv

ExecProcessRequest if {
	some pattern in allowed_exec_regex
	regex.match(pattern, concat(" ", input.spec.args))
}

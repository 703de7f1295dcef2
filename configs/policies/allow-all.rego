# Agent policy for the coco-dev runtime class (no TEE): the host may ask for
# anything. Never use it for a confidential pod.
package agent_policy

import rego.v1

default HealthRequest := true
default SetupSandboxRequest := true
default PrepareContainerRequest := true
default EventsRequest := true
default SetPolicyRequest := true
default DestroySandboxRequest := true

default CreateTaskRequest := true
default StartRequest := true
default DeleteRequest := true
default ExecProcessRequest := true
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
default CheckpointTaskRequest := true

# stdio streams between the host and a container's processes.
default ReadStreamRequest := true
default WriteStreamRequest := true

default GetResourceRequest := true
default GetTokenRequest := true
default GetEvidenceRequest := true

# kubectl port-forward to any port the guest serves on loopback (but the
# agent's own workload API, which the agent never forwards).
default PortForwardRequest := true

default UpdateVolumeRequest := true
default ReadTerminationMessageRequest := true

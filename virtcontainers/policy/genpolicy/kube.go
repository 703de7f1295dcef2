package genpolicy

import "encoding/json"

// The Kubernetes objects the generator reads, as its own minimal structs
// rather than k8s.io/api: that module's init-time registrations would cost
// every per-pod shim process heap, and the generator must know every field
// it accepts anyway. Each struct lists every field of the Kubernetes type,
// so the strict decoder refuses what is not Kubernetes; fields the policy
// does not depend on (scheduling, resources, ports...) are kept as
// json.RawMessage and ignored on purpose. A field the generator cannot
// honour (ephemeral containers, volume devices, ...) is refused by name in
// checkSupported.

type objectMeta struct {
	Name                       string            `json:"name,omitempty"`
	GenerateName               string            `json:"generateName,omitempty"`
	Namespace                  string            `json:"namespace,omitempty"`
	Labels                     map[string]string `json:"labels,omitempty"`
	Annotations                map[string]string `json:"annotations,omitempty"`
	UID                        string            `json:"uid,omitempty"`
	ResourceVersion            string            `json:"resourceVersion,omitempty"`
	Generation                 int64             `json:"generation,omitempty"`
	CreationTimestamp          json.RawMessage   `json:"creationTimestamp,omitempty"`
	DeletionTimestamp          json.RawMessage   `json:"deletionTimestamp,omitempty"`
	DeletionGracePeriodSeconds *int64            `json:"deletionGracePeriodSeconds,omitempty"`
	OwnerReferences            json.RawMessage   `json:"ownerReferences,omitempty"`
	Finalizers                 []string          `json:"finalizers,omitempty"`
	ManagedFields              json.RawMessage   `json:"managedFields,omitempty"`
	SelfLink                   string            `json:"selfLink,omitempty"`
}

type podTemplate struct {
	Metadata objectMeta `json:"metadata"`
	Spec     podSpec    `json:"spec"`
}

type podSpec struct {
	Volumes                       []volume            `json:"volumes,omitempty"`
	InitContainers                []container         `json:"initContainers,omitempty"`
	Containers                    []container         `json:"containers"`
	EphemeralContainers           json.RawMessage     `json:"ephemeralContainers,omitempty"`
	RestartPolicy                 string              `json:"restartPolicy,omitempty"`
	TerminationGracePeriodSeconds *int64              `json:"terminationGracePeriodSeconds,omitempty"`
	ActiveDeadlineSeconds         *int64              `json:"activeDeadlineSeconds,omitempty"`
	DNSPolicy                     string              `json:"dnsPolicy,omitempty"`
	NodeSelector                  map[string]string   `json:"nodeSelector,omitempty"`
	ServiceAccountName            string              `json:"serviceAccountName,omitempty"`
	DeprecatedServiceAccount      string              `json:"serviceAccount,omitempty"`
	AutomountServiceAccountToken  *bool               `json:"automountServiceAccountToken,omitempty"`
	NodeName                      string              `json:"nodeName,omitempty"`
	HostNetwork                   bool                `json:"hostNetwork,omitempty"`
	HostPID                       bool                `json:"hostPID,omitempty"`
	HostIPC                       bool                `json:"hostIPC,omitempty"`
	ShareProcessNamespace         *bool               `json:"shareProcessNamespace,omitempty"`
	SecurityContext               *podSecurityContext `json:"securityContext,omitempty"`
	ImagePullSecrets              json.RawMessage     `json:"imagePullSecrets,omitempty"`
	Hostname                      string              `json:"hostname,omitempty"`
	Subdomain                     string              `json:"subdomain,omitempty"`
	Affinity                      json.RawMessage     `json:"affinity,omitempty"`
	SchedulerName                 string              `json:"schedulerName,omitempty"`
	Tolerations                   json.RawMessage     `json:"tolerations,omitempty"`
	HostAliases                   json.RawMessage     `json:"hostAliases,omitempty"`
	PriorityClassName             string              `json:"priorityClassName,omitempty"`
	Priority                      *int32              `json:"priority,omitempty"`
	DNSConfig                     json.RawMessage     `json:"dnsConfig,omitempty"`
	ReadinessGates                json.RawMessage     `json:"readinessGates,omitempty"`
	RuntimeClassName              *string             `json:"runtimeClassName,omitempty"`
	EnableServiceLinks            *bool               `json:"enableServiceLinks,omitempty"`
	PreemptionPolicy              *string             `json:"preemptionPolicy,omitempty"`
	Overhead                      json.RawMessage     `json:"overhead,omitempty"`
	TopologySpreadConstraints     json.RawMessage     `json:"topologySpreadConstraints,omitempty"`
	SetHostnameAsFQDN             *bool               `json:"setHostnameAsFQDN,omitempty"`
	OS                            *struct {
		Name string `json:"name"`
	} `json:"os,omitempty"`
	HostUsers        *bool           `json:"hostUsers,omitempty"`
	SchedulingGates  json.RawMessage `json:"schedulingGates,omitempty"`
	ResourceClaims   json.RawMessage `json:"resourceClaims,omitempty"`
	Resources        json.RawMessage `json:"resources,omitempty"`
	HostnameOverride *string         `json:"hostnameOverride,omitempty"`
}

type podSecurityContext struct {
	SELinuxOptions           json.RawMessage `json:"seLinuxOptions,omitempty"`
	WindowsOptions           json.RawMessage `json:"windowsOptions,omitempty"`
	RunAsUser                *int64          `json:"runAsUser,omitempty"`
	RunAsGroup               *int64          `json:"runAsGroup,omitempty"`
	RunAsNonRoot             *bool           `json:"runAsNonRoot,omitempty"`
	SupplementalGroups       []int64         `json:"supplementalGroups,omitempty"`
	SupplementalGroupsPolicy *string         `json:"supplementalGroupsPolicy,omitempty"`
	FSGroup                  *int64          `json:"fsGroup,omitempty"`
	FSGroupChangePolicy      *string         `json:"fsGroupChangePolicy,omitempty"`
	Sysctls                  []sysctl        `json:"sysctls,omitempty"`
	SeccompProfile           *seccompProfile `json:"seccompProfile,omitempty"`
	AppArmorProfile          json.RawMessage `json:"appArmorProfile,omitempty"`
	SELinuxChangePolicy      *string         `json:"seLinuxChangePolicy,omitempty"`
}

type sysctl struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

type seccompProfile struct {
	Type             string  `json:"type"`
	LocalhostProfile *string `json:"localhostProfile,omitempty"`
}

type container struct {
	Name                     string           `json:"name"`
	Image                    string           `json:"image,omitempty"`
	Command                  []string         `json:"command,omitempty"`
	Args                     []string         `json:"args,omitempty"`
	WorkingDir               string           `json:"workingDir,omitempty"`
	Ports                    []containerPort  `json:"ports,omitempty"`
	EnvFrom                  []envFromSource  `json:"envFrom,omitempty"`
	Env                      []envVar         `json:"env,omitempty"`
	Resources                json.RawMessage  `json:"resources,omitempty"`
	ResizePolicy             json.RawMessage  `json:"resizePolicy,omitempty"`
	RestartPolicy            *string          `json:"restartPolicy,omitempty"`
	RestartPolicyRules       json.RawMessage  `json:"restartPolicyRules,omitempty"`
	VolumeMounts             []volumeMount    `json:"volumeMounts,omitempty"`
	VolumeDevices            json.RawMessage  `json:"volumeDevices,omitempty"`
	LivenessProbe            *probe           `json:"livenessProbe,omitempty"`
	ReadinessProbe           *probe           `json:"readinessProbe,omitempty"`
	StartupProbe             *probe           `json:"startupProbe,omitempty"`
	Lifecycle                *lifecycle       `json:"lifecycle,omitempty"`
	TerminationMessagePath   string           `json:"terminationMessagePath,omitempty"`
	TerminationMessagePolicy string           `json:"terminationMessagePolicy,omitempty"`
	ImagePullPolicy          string           `json:"imagePullPolicy,omitempty"`
	SecurityContext          *securityContext `json:"securityContext,omitempty"`
	Stdin                    bool             `json:"stdin,omitempty"`
	StdinOnce                bool             `json:"stdinOnce,omitempty"`
	TTY                      bool             `json:"tty,omitempty"`
}

type containerPort struct {
	Name          string `json:"name,omitempty"`
	HostPort      int32  `json:"hostPort,omitempty"`
	ContainerPort int32  `json:"containerPort"`
	Protocol      string `json:"protocol,omitempty"`
	HostIP        string `json:"hostIP,omitempty"`
}

type envVar struct {
	Name      string        `json:"name"`
	Value     string        `json:"value,omitempty"`
	ValueFrom *envVarSource `json:"valueFrom,omitempty"`
}

type envVarSource struct {
	FieldRef         *fieldRef       `json:"fieldRef,omitempty"`
	ResourceFieldRef json.RawMessage `json:"resourceFieldRef,omitempty"`
	ConfigMapKeyRef  *keySelector    `json:"configMapKeyRef,omitempty"`
	SecretKeyRef     *keySelector    `json:"secretKeyRef,omitempty"`
	FileKeyRef       json.RawMessage `json:"fileKeyRef,omitempty"`
}

type fieldRef struct {
	APIVersion string `json:"apiVersion,omitempty"`
	FieldPath  string `json:"fieldPath"`
}

type keySelector struct {
	Name     string `json:"name,omitempty"`
	Key      string `json:"key"`
	Optional *bool  `json:"optional,omitempty"`
}

type envFromSource struct {
	Prefix       string     `json:"prefix,omitempty"`
	ConfigMapRef *objectRef `json:"configMapRef,omitempty"`
	SecretRef    *objectRef `json:"secretRef,omitempty"`
}

type objectRef struct {
	Name     string `json:"name,omitempty"`
	Optional *bool  `json:"optional,omitempty"`
}

type volumeMount struct {
	Name              string  `json:"name"`
	ReadOnly          bool    `json:"readOnly,omitempty"`
	RecursiveReadOnly *string `json:"recursiveReadOnly,omitempty"`
	MountPath         string  `json:"mountPath"`
	SubPath           string  `json:"subPath,omitempty"`
	MountPropagation  *string `json:"mountPropagation,omitempty"`
	SubPathExpr       string  `json:"subPathExpr,omitempty"`
}

type probe struct {
	Exec                          *execAction     `json:"exec,omitempty"`
	HTTPGet                       json.RawMessage `json:"httpGet,omitempty"`
	TCPSocket                     json.RawMessage `json:"tcpSocket,omitempty"`
	GRPC                          json.RawMessage `json:"grpc,omitempty"`
	InitialDelaySeconds           int32           `json:"initialDelaySeconds,omitempty"`
	TimeoutSeconds                int32           `json:"timeoutSeconds,omitempty"`
	PeriodSeconds                 int32           `json:"periodSeconds,omitempty"`
	SuccessThreshold              int32           `json:"successThreshold,omitempty"`
	FailureThreshold              int32           `json:"failureThreshold,omitempty"`
	TerminationGracePeriodSeconds *int64          `json:"terminationGracePeriodSeconds,omitempty"`
}

type execAction struct {
	Command []string `json:"command,omitempty"`
}

type lifecycle struct {
	PostStart  *handler `json:"postStart,omitempty"`
	PreStop    *handler `json:"preStop,omitempty"`
	StopSignal *string  `json:"stopSignal,omitempty"`
}

type handler struct {
	Exec      *execAction     `json:"exec,omitempty"`
	HTTPGet   json.RawMessage `json:"httpGet,omitempty"`
	TCPSocket json.RawMessage `json:"tcpSocket,omitempty"`
	Sleep     json.RawMessage `json:"sleep,omitempty"`
}

type securityContext struct {
	Capabilities             *capabilities   `json:"capabilities,omitempty"`
	Privileged               *bool           `json:"privileged,omitempty"`
	SELinuxOptions           json.RawMessage `json:"seLinuxOptions,omitempty"`
	WindowsOptions           json.RawMessage `json:"windowsOptions,omitempty"`
	RunAsUser                *int64          `json:"runAsUser,omitempty"`
	RunAsGroup               *int64          `json:"runAsGroup,omitempty"`
	RunAsNonRoot             *bool           `json:"runAsNonRoot,omitempty"`
	ReadOnlyRootFilesystem   *bool           `json:"readOnlyRootFilesystem,omitempty"`
	AllowPrivilegeEscalation *bool           `json:"allowPrivilegeEscalation,omitempty"`
	ProcMount                *string         `json:"procMount,omitempty"`
	SeccompProfile           *seccompProfile `json:"seccompProfile,omitempty"`
	AppArmorProfile          json.RawMessage `json:"appArmorProfile,omitempty"`
}

type capabilities struct {
	Add  []string `json:"add,omitempty"`
	Drop []string `json:"drop,omitempty"`
}

type volume struct {
	Name                  string           `json:"name"`
	ConfigMap             *configMapVolume `json:"configMap,omitempty"`
	Secret                *secretVolume    `json:"secret,omitempty"`
	Projected             json.RawMessage  `json:"projected,omitempty"`
	DownwardAPI           json.RawMessage  `json:"downwardAPI,omitempty"`
	EmptyDir              json.RawMessage  `json:"emptyDir,omitempty"`
	HostPath              *hostPathVolume  `json:"hostPath,omitempty"`
	PersistentVolumeClaim *pvcVolume       `json:"persistentVolumeClaim,omitempty"`
	// Every other volume source of Kubernetes, so that it is refused by
	// name (unsupportedVolume) rather than as an unknown field.
	CSI                  json.RawMessage `json:"csi,omitempty"`
	Ephemeral            json.RawMessage `json:"ephemeral,omitempty"`
	Image                json.RawMessage `json:"image,omitempty"`
	NFS                  json.RawMessage `json:"nfs,omitempty"`
	ISCSI                json.RawMessage `json:"iscsi,omitempty"`
	FC                   json.RawMessage `json:"fc,omitempty"`
	GitRepo              json.RawMessage `json:"gitRepo,omitempty"`
	AWSElasticBlockStore json.RawMessage `json:"awsElasticBlockStore,omitempty"`
	GCEPersistentDisk    json.RawMessage `json:"gcePersistentDisk,omitempty"`
	AzureDisk            json.RawMessage `json:"azureDisk,omitempty"`
	AzureFile            json.RawMessage `json:"azureFile,omitempty"`
	CephFS               json.RawMessage `json:"cephfs,omitempty"`
	RBD                  json.RawMessage `json:"rbd,omitempty"`
	Cinder               json.RawMessage `json:"cinder,omitempty"`
	FlexVolume           json.RawMessage `json:"flexVolume,omitempty"`
	Flocker              json.RawMessage `json:"flocker,omitempty"`
	Glusterfs            json.RawMessage `json:"glusterfs,omitempty"`
	PhotonPersistentDisk json.RawMessage `json:"photonPersistentDisk,omitempty"`
	PortworxVolume       json.RawMessage `json:"portworxVolume,omitempty"`
	Quobyte              json.RawMessage `json:"quobyte,omitempty"`
	ScaleIO              json.RawMessage `json:"scaleIO,omitempty"`
	StorageOS            json.RawMessage `json:"storageos,omitempty"`
	VsphereVolume        json.RawMessage `json:"vsphereVolume,omitempty"`
}

type configMapVolume struct {
	Name        string          `json:"name,omitempty"`
	Items       json.RawMessage `json:"items,omitempty"`
	DefaultMode *int32          `json:"defaultMode,omitempty"`
	Optional    *bool           `json:"optional,omitempty"`
}

type secretVolume struct {
	SecretName  string          `json:"secretName,omitempty"`
	Items       json.RawMessage `json:"items,omitempty"`
	DefaultMode *int32          `json:"defaultMode,omitempty"`
	Optional    *bool           `json:"optional,omitempty"`
}

type hostPathVolume struct {
	Path string  `json:"path"`
	Type *string `json:"type,omitempty"`
}

type pvcVolume struct {
	ClaimName string `json:"claimName"`
	ReadOnly  bool   `json:"readOnly,omitempty"`
}

// dataObject is a ConfigMap or a Secret given alongside the workload: the
// generator needs its keys (and, for a ConfigMap, its values) to predict
// the environment envFrom and valueFrom produce. A Secret's values are
// never put in the policy; only its keys are needed.
type dataObject struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   objectMeta        `json:"metadata"`
	Data       map[string]string `json:"data,omitempty"`
	BinaryData map[string]string `json:"binaryData,omitempty"`
	StringData map[string]string `json:"stringData,omitempty"`
	Type       string            `json:"type,omitempty"`
	Immutable  *bool             `json:"immutable,omitempty"`
}

package genpolicy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"

	yamlv3 "go.yaml.in/yaml/v3"
)

// Workload is one pod template found in the input: a Pod, or the template
// of a Deployment, ReplicaSet, StatefulSet, DaemonSet, Job or CronJob.
type Workload struct {
	Doc       int    // index of its YAML document in the input
	Kind      string // "Deployment", ...
	Name      string // the object's name
	Namespace string // metadata.namespace, or the caller's default

	// PodName matches the name the pod will get: exact for a Pod, a
	// pattern for a controller's pods (names get a random suffix).
	PodName nameMatch

	meta objectMeta // the pod template's metadata
	spec podSpec
	// metaPath is where the pod's metadata sits in the document, for
	// --inject: e.g. ["spec", "template", "metadata"].
	metaPath []string
}

type nameMatch struct {
	Exact string
	Regex string
}

func (n nameMatch) match() map[string]any {
	if n.Regex != "" {
		return matcher("regex", n.Regex)
	}
	return matcher("exact", n.Exact)
}

// Input is everything read from the YAML documents.
type Input struct {
	Docs       []*yamlv3.Node // every document, for --inject
	Workloads  []*Workload
	ConfigMaps map[string]map[string]string // "namespace/name" ("/name" without one) → data
	Secrets    map[string][]string          // "namespace/name" ("/name" without one) → keys
	Skipped    []string                     // "Service/web": kinds without a pod
}

// Load reads YAML documents (separated by ---). namespace is the default
// for objects that name none (kubectl apply's default is "default").
// A field the generator does not know is an error naming the field.
func Load(r io.Reader, namespace string) (*Input, error) {
	in := &Input{ConfigMaps: map[string]map[string]string{}, Secrets: map[string][]string{}}
	dec := yamlv3.NewDecoder(r)
	for i := 0; ; i++ {
		var node yamlv3.Node
		err := dec.Decode(&node)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i+1, err)
		}
		in.Docs = append(in.Docs, &node)
		if err := in.add(i, &node, namespace); err != nil {
			return nil, err
		}
	}
	if len(in.Workloads) == 0 {
		return nil, errors.New("no Pod, Deployment, ReplicaSet, StatefulSet, DaemonSet, Job or CronJob in the input")
	}
	return in, nil
}

// head is what every object has.
type head struct {
	APIVersion string          `json:"apiVersion"`
	Kind       string          `json:"kind"`
	Metadata   objectMeta      `json:"metadata"`
	Spec       json.RawMessage `json:"spec,omitempty"`
	Status     json.RawMessage `json:"status,omitempty"`
}

func (in *Input) add(i int, node *yamlv3.Node, namespace string) error {
	if len(node.Content) == 0 { // an empty document (a trailing ---)
		return nil
	}
	// YAML → JSON, then a strict JSON decode: one decoder (encoding/json's
	// DisallowUnknownFields) names unknown fields for every kind.
	var doc any
	if err := node.Decode(&doc); err != nil {
		return fmt.Errorf("document %d: %w", i+1, err)
	}
	js, err := json.Marshal(doc)
	if err != nil {
		return fmt.Errorf("document %d: not a Kubernetes object (%w)", i+1, err)
	}
	var kind struct {
		Kind string `json:"kind"`
	}
	if err := json.Unmarshal(js, &kind); err != nil {
		return fmt.Errorf("document %d: not a Kubernetes object: %w", i+1, err)
	}
	where := func(name string) string { return fmt.Sprintf("document %d (%s %s)", i+1, kind.Kind, name) }
	switch kind.Kind {
	case "ConfigMap", "Secret":
		var d dataObject
		if err := strictJSON(js, &d); err != nil {
			return fmt.Errorf("%s: %w", where(""), err)
		}
		// Without a namespace it goes wherever the workload goes.
		key := d.Metadata.Namespace + "/" + d.Metadata.Name
		if kind.Kind == "Secret" {
			in.Secrets[key] = secretKeys(d)
			return nil
		}
		data := map[string]string{}
		for k, v := range d.Data {
			data[k] = v
		}
		in.ConfigMaps[key] = data
		return nil
	case "Pod", "Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job", "CronJob":
	default:
		in.Skipped = append(in.Skipped, kind.Kind)
		return nil
	}
	var h head
	if err := strictJSON(js, &h); err != nil {
		return fmt.Errorf("%s: %w", where(""), err)
	}
	w := &Workload{Doc: i, Kind: h.Kind, Name: h.Metadata.Name, Namespace: h.Metadata.Namespace}
	if w.Namespace == "" {
		w.Namespace = namespace
	}
	if w.Name == "" && h.Metadata.GenerateName == "" {
		return fmt.Errorf("%s: metadata.name: missing", where(""))
	}
	tmpl, err := decodeTemplate(h)
	if err != nil {
		return fmt.Errorf("%s: %w", where(w.Name), err)
	}
	w.meta, w.spec = tmpl.t.Metadata, tmpl.t.Spec
	w.metaPath = tmpl.path
	w.PodName = podName(h.Kind, h.Metadata)
	if len(w.spec.Containers) == 0 {
		return fmt.Errorf("%s: spec.containers: a pod needs at least one container", where(w.Name))
	}
	in.Workloads = append(in.Workloads, w)
	return nil
}

type templateAt struct {
	t    podTemplate
	path []string
}

// The spec of each controller kind: every field Kubernetes defines, the
// pod template decoded, the rest kept opaque.
type deploymentSpec struct {
	Replicas                *int32          `json:"replicas,omitempty"`
	Selector                json.RawMessage `json:"selector,omitempty"`
	Template                podTemplate     `json:"template"`
	Strategy                json.RawMessage `json:"strategy,omitempty"`
	UpdateStrategy          json.RawMessage `json:"updateStrategy,omitempty"`
	MinReadySeconds         int32           `json:"minReadySeconds,omitempty"`
	RevisionHistoryLimit    *int32          `json:"revisionHistoryLimit,omitempty"`
	Paused                  bool            `json:"paused,omitempty"`
	ProgressDeadlineSeconds *int32          `json:"progressDeadlineSeconds,omitempty"`
	// StatefulSet
	VolumeClaimTemplates                 json.RawMessage `json:"volumeClaimTemplates,omitempty"`
	ServiceName                          string          `json:"serviceName,omitempty"`
	PodManagementPolicy                  string          `json:"podManagementPolicy,omitempty"`
	PersistentVolumeClaimRetentionPolicy json.RawMessage `json:"persistentVolumeClaimRetentionPolicy,omitempty"`
	Ordinals                             json.RawMessage `json:"ordinals,omitempty"`
}

type jobSpec struct {
	Parallelism             *int32          `json:"parallelism,omitempty"`
	Completions             *int32          `json:"completions,omitempty"`
	ActiveDeadlineSeconds   *int64          `json:"activeDeadlineSeconds,omitempty"`
	PodFailurePolicy        json.RawMessage `json:"podFailurePolicy,omitempty"`
	SuccessPolicy           json.RawMessage `json:"successPolicy,omitempty"`
	BackoffLimit            *int32          `json:"backoffLimit,omitempty"`
	BackoffLimitPerIndex    *int32          `json:"backoffLimitPerIndex,omitempty"`
	MaxFailedIndexes        *int32          `json:"maxFailedIndexes,omitempty"`
	Selector                json.RawMessage `json:"selector,omitempty"`
	ManualSelector          *bool           `json:"manualSelector,omitempty"`
	Template                podTemplate     `json:"template"`
	TTLSecondsAfterFinished *int32          `json:"ttlSecondsAfterFinished,omitempty"`
	CompletionMode          *string         `json:"completionMode,omitempty"`
	Suspend                 *bool           `json:"suspend,omitempty"`
	PodReplacementPolicy    *string         `json:"podReplacementPolicy,omitempty"`
	ManagedBy               *string         `json:"managedBy,omitempty"`
}

type cronJobSpec struct {
	Schedule                   string  `json:"schedule"`
	TimeZone                   *string `json:"timeZone,omitempty"`
	StartingDeadlineSeconds    *int64  `json:"startingDeadlineSeconds,omitempty"`
	ConcurrencyPolicy          string  `json:"concurrencyPolicy,omitempty"`
	Suspend                    *bool   `json:"suspend,omitempty"`
	SuccessfulJobsHistoryLimit *int32  `json:"successfulJobsHistoryLimit,omitempty"`
	FailedJobsHistoryLimit     *int32  `json:"failedJobsHistoryLimit,omitempty"`
	JobTemplate                struct {
		Metadata objectMeta `json:"metadata,omitempty"`
		Spec     jobSpec    `json:"spec"`
	} `json:"jobTemplate"`
}

func decodeTemplate(h head) (templateAt, error) {
	if len(h.Spec) == 0 {
		return templateAt{}, errors.New("spec: missing")
	}
	switch h.Kind {
	case "Pod":
		var s podSpec
		if err := strictJSON(h.Spec, &s); err != nil {
			return templateAt{}, fmt.Errorf("spec: %w", err)
		}
		return templateAt{t: podTemplate{Metadata: h.Metadata, Spec: s}, path: []string{"metadata"}}, nil
	case "Job":
		var s jobSpec
		if err := strictJSON(h.Spec, &s); err != nil {
			return templateAt{}, fmt.Errorf("spec: %w", err)
		}
		return templateAt{t: s.Template, path: []string{"spec", "template", "metadata"}}, nil
	case "CronJob":
		var s cronJobSpec
		if err := strictJSON(h.Spec, &s); err != nil {
			return templateAt{}, fmt.Errorf("spec: %w", err)
		}
		return templateAt{t: s.JobTemplate.Spec.Template, path: []string{"spec", "jobTemplate", "spec", "template", "metadata"}}, nil
	default:
		var s deploymentSpec
		if err := strictJSON(h.Spec, &s); err != nil {
			return templateAt{}, fmt.Errorf("spec: %w", err)
		}
		return templateAt{t: s.Template, path: []string{"spec", "template", "metadata"}}, nil
	}
}

// podName predicts the pod's name from its owner: controllers add a
// random suffix of [a-z0-9] (ReplicaSets of a Deployment also the
// pod-template hash, StatefulSets an ordinal, CronJobs the scheduled time).
func podName(kind string, m objectMeta) nameMatch {
	q := regexp.QuoteMeta(m.Name)
	switch kind {
	case "Pod":
		if m.Name == "" {
			return nameMatch{Regex: "^" + regexp.QuoteMeta(m.GenerateName) + "[a-z0-9]{5}$"}
		}
		return nameMatch{Exact: m.Name}
	case "Deployment":
		return nameMatch{Regex: "^" + q + "-[a-z0-9]{1,10}-[a-z0-9]{5}$"}
	case "StatefulSet":
		return nameMatch{Regex: "^" + q + "-[0-9]+$"}
	case "Job":
		return nameMatch{Regex: "^" + q + "-([0-9]+-)?[a-z0-9]{5}$"}
	case "CronJob":
		return nameMatch{Regex: "^" + q + "-[0-9]+-([0-9]+-)?[a-z0-9]{5}$"}
	default: // ReplicaSet, DaemonSet
		return nameMatch{Regex: "^" + q + "-[a-z0-9]{5}$"}
	}
}

func secretKeys(d dataObject) []string {
	var keys []string
	for k := range d.Data {
		keys = append(keys, k)
	}
	for k := range d.StringData {
		keys = append(keys, k)
	}
	return keys
}

// strictJSON decodes one JSON document, refusing unknown fields; the error
// names the field ("json: unknown field \"foo\"").
func strictJSON(js []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(js))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return errors.New(strings.TrimPrefix(err.Error(), "json: "))
	}
	return nil
}

func lookupNS[V any](m map[string]V, ns, name string) (V, bool) {
	if v, ok := m[ns+"/"+name]; ok {
		return v, true
	}
	v, ok := m["/"+name]
	return v, ok
}

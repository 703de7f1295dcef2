package options

import (
	"fmt"
	"unicode/utf8"

	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/anypb"
)

// PodConfig is what the sandbox API's CreateSandbox options say about the pod.
type PodConfig struct {
	Hostname    string
	Annotations map[string]string
	// DNS is the pod's dns_config; nil when CRI sent none.
	DNS *DNSConfig
}

// DNSConfig is CRI's DNSConfig: what goes into the pod's resolv.conf.
type DNSConfig struct {
	Servers, Searches, Options []string
}

// podSandboxConfigName is the full name of CRI's runtime.v1.PodSandboxConfig.
const podSandboxConfigName = "runtime.v1.PodSandboxConfig"

// Field numbers of runtime.v1.PodSandboxConfig (k8s.io/cri-api api.proto)
// and of its map entries; they are wire format, so they never change.
const (
	pscHostname    protowire.Number = 2 // string hostname = 2
	pscDNSConfig   protowire.Number = 4 // DNSConfig dns_config = 4
	dnsServers     protowire.Number = 1 // DNSConfig: repeated string servers = 1
	dnsSearches    protowire.Number = 2 // repeated string searches = 2
	dnsOptions     protowire.Number = 3 // repeated string options = 3
	pscAnnotations protowire.Number = 7 // map<string, string> annotations = 7
	mapKey         protowire.Number = 1
	mapValue       protowire.Number = 2
)

// DecodePodConfig decodes CreateSandboxRequest.Options. containerd's CRI
// sends the CRI PodSandboxConfig there; other clients may send nothing.
//
// It reads the two fields the shim uses straight off the wire instead of
// linking k8s.io/cri-api: that package registers every CRI message with the
// protobuf runtime at init, about 220 KB of heap in every shim process (one
// per pod) for two strings. Other fields are skipped after a wire-format
// check; the strings get proto3's UTF-8 check.
func DecodePodConfig(a *anypb.Any) (PodConfig, error) {
	if a == nil || (a.GetTypeUrl() == "" && len(a.GetValue()) == 0) {
		return PodConfig{}, nil
	}
	if name := typeName(a.GetTypeUrl()); name != podSandboxConfigName {
		return PodConfig{}, fmt.Errorf("sandbox options of type %q are not understood; expected %s: %w",
			a.GetTypeUrl(), podSandboxConfigName, errdefs.ErrInvalidArgument)
	}
	var pc PodConfig
	err := eachField(a.GetValue(), func(num protowire.Number, typ protowire.Type, v []byte) error {
		switch {
		case num == pscHostname && typ == protowire.BytesType:
			s, err := protoString("hostname", v)
			pc.Hostname = s
			return err
		case num == pscDNSConfig && typ == protowire.BytesType:
			dns, err := dnsConfig(v)
			pc.DNS = dns
			return err
		case num == pscAnnotations && typ == protowire.BytesType:
			k, val, err := mapEntry(v)
			if err != nil {
				return err
			}
			if pc.Annotations == nil {
				pc.Annotations = map[string]string{}
			}
			pc.Annotations[k] = val // a repeated key: the last one wins, as in protobuf
			return nil
		}
		return nil
	})
	if err != nil {
		return PodConfig{}, fmt.Errorf("sandbox options (%s): %v: %w", podSandboxConfigName, err, errdefs.ErrInvalidArgument)
	}
	return pc, nil
}

// dnsConfig decodes a CRI DNSConfig.
func dnsConfig(b []byte) (*DNSConfig, error) {
	dns := &DNSConfig{}
	err := eachField(b, func(num protowire.Number, typ protowire.Type, v []byte) error {
		if typ != protowire.BytesType {
			return nil
		}
		var list *[]string
		switch num {
		case dnsServers:
			list = &dns.Servers
		case dnsSearches:
			list = &dns.Searches
		case dnsOptions:
			list = &dns.Options
		default:
			return nil
		}
		s, err := protoString("dns_config", v)
		*list = append(*list, s)
		return err
	})
	return dns, err
}

// mapEntry decodes one map<string, string> entry; a missing key or value is
// the empty string.
func mapEntry(b []byte) (key, value string, err error) {
	err = eachField(b, func(num protowire.Number, typ protowire.Type, v []byte) error {
		var err error
		switch {
		case num == mapKey && typ == protowire.BytesType:
			key, err = protoString("annotations key", v)
		case num == mapValue && typ == protowire.BytesType:
			value, err = protoString("annotations value", v)
		}
		return err
	})
	return key, value, err
}

// eachField walks the top-level fields of a protobuf message. fn gets the
// payload of length-delimited fields (nil for the others, which no caller
// reads); a truncated or malformed field is an error.
func eachField(b []byte, fn func(protowire.Number, protowire.Type, []byte) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		var v []byte
		if typ == protowire.BytesType {
			v, n = protowire.ConsumeBytes(b)
		} else {
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return fmt.Errorf("field %d: %w", num, protowire.ParseError(n))
		}
		b = b[n:]
		if err := fn(num, typ, v); err != nil {
			return err
		}
	}
	return nil
}

// protoString checks proto3's rule that a string field is valid UTF-8.
func protoString(field string, v []byte) (string, error) {
	if !utf8.Valid(v) {
		return "", fmt.Errorf("%s is not valid UTF-8", field)
	}
	return string(v), nil
}

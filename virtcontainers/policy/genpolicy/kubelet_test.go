package genpolicy

import (
	"reflect"
	"testing"
)

func lookupIn(vars map[string]value) func(string) (value, bool) {
	return func(n string) (value, bool) {
		v, ok := vars[n]
		return v, ok
	}
}

// The rules of "Define Dependent Environment Variables" and of $(VAR) in
// command and args (Kubernetes docs).
func TestExpand(t *testing.T) {
	vars := map[string]value{"A": literal("a"), "EMPTY": literal(""), "S": unknown()}
	for _, c := range []struct {
		in   string
		want map[string]any
	}{
		{"$(A)", map[string]any{"exact": "a"}},
		{"x-$(A)-y", map[string]any{"exact": "x-a-y"}},
		{"$(UNDEFINED)", map[string]any{"exact": "$(UNDEFINED)"}}, // left as written
		{"$$(A)", map[string]any{"exact": "$(A)"}},                // escaped
		{"$$$(A)", map[string]any{"exact": "$a"}},                 // $$ then $(A)
		{"cost $5", map[string]any{"exact": "cost $5"}},           // $ before anything else
		{"$A", map[string]any{"exact": "$A"}},                     // no parentheses: no reference
		{"$(A", map[string]any{"exact": "$(A"}},                   // unterminated
		{"end$", map[string]any{"exact": "end$"}},                 // trailing $
		{"$(EMPTY)", map[string]any{"exact": ""}},                 // defined as empty
		{"$()", map[string]any{"exact": "$()"}},                   // empty name: undefined
		{"$(S)", map[string]any{"any": true}},                     // known only on the node
		{"k=$(S);", map[string]any{"regex": "^k=(?s:.*);$"}},      // partly known
		{"$(S)$(S)", map[string]any{"any": true}},                 // holes merge
		{"a.b*$(S)", map[string]any{"regex": `^a\.b\*(?s:.*)$`}},  // literals quoted
		{"", map[string]any{"exact": ""}},
	} {
		if got := brief(expand(c.in, lookupIn(vars)).match()); !reflect.DeepEqual(got, c.want) {
			t.Errorf("expand(%q) = %v, want %v", c.in, got, c.want)
		}
	}
}

// The table of "Define a Command and Arguments for a Container" (Notes):
// how command and args combine with the image's ENTRYPOINT and CMD.
func TestProcessArgs(t *testing.T) {
	img := &ImageConfig{Entrypoint: []string{"/ep-1"}, Cmd: []string{"foo", "bar"}}
	for _, c := range []struct {
		command, args, want []string
	}{
		{nil, nil, []string{"/ep-1", "foo", "bar"}},
		{[]string{"/ep-2"}, nil, []string{"/ep-2"}},
		{nil, []string{"zoo", "boo"}, []string{"/ep-1", "zoo", "boo"}},
		{[]string{"/ep-2"}, []string{"zoo", "boo"}, []string{"/ep-2", "zoo", "boo"}},
	} {
		got, err := processArgs(&container{Name: "c", Command: c.command, Args: c.args}, img, lookupIn(nil))
		if err != nil {
			t.Fatal(err)
		}
		var s []string
		for _, v := range got {
			x, _ := v.exact()
			s = append(s, x)
		}
		if !reflect.DeepEqual(s, c.want) {
			t.Errorf("command %v args %v: %v, want %v", c.command, c.args, s, c.want)
		}
	}
	// An entrypoint of one empty string counts as none (containerd).
	got, _ := processArgs(&container{Name: "c"}, &ImageConfig{Entrypoint: []string{""}, Cmd: []string{"sh"}}, lookupIn(nil))
	if x, _ := got[0].exact(); len(got) != 1 || x != "sh" {
		t.Errorf("empty entrypoint: %v", got)
	}
	if _, err := processArgs(&container{Name: "c"}, &ImageConfig{}, lookupIn(nil)); err == nil {
		t.Error("no command anywhere: want an error")
	}
	// $(VAR) in command and args is the container's env.
	got, _ = processArgs(&container{Name: "c", Command: []string{"echo", "$(MSG)", "$$(MSG)"}}, img, lookupIn(map[string]value{"MSG": literal("hi")}))
	if a, _ := got[1].exact(); a != "hi" {
		t.Errorf("$(MSG) = %q", a)
	}
	if a, _ := got[2].exact(); a != "$(MSG)" {
		t.Errorf("$$(MSG) = %q", a)
	}
}

func TestKubeletEnvOrder(t *testing.T) {
	in := &Input{ConfigMaps: map[string]map[string]string{
		"ns/one": {"A": "from-one", "B": "b1"},
		"/two":   {"A": "from-two"},
	}, Secrets: map[string][]string{"ns/s": {"PASSWORD"}}}
	w := &Workload{Namespace: "ns", PodName: nameMatch{Exact: "p"}}
	g := &generator{in: in, w: w}
	c := &container{Name: "c",
		EnvFrom: []envFromSource{
			{ConfigMapRef: &objectRef{Name: "one"}},
			{ConfigMapRef: &objectRef{Name: "two"}, Prefix: ""}, // later source wins
			{SecretRef: &objectRef{Name: "s"}, Prefix: "DB_"},   // names only
		},
		Env: []envVar{
			{Name: "LATER_REF", Value: "$(C)"},                                   // C not defined yet: literal
			{Name: "C", Value: "c-$(A)"},                                         // A from envFrom
			{Name: "B", Value: "env-wins"},                                       // env over envFrom
			{Name: "D", Value: "$(C)/$(DB_PASSWORD)/$(KUBERNETES_SERVICE_HOST)"}, // earlier env, secret, service
			{Name: "NAME", ValueFrom: &envVarSource{FieldRef: &fieldRef{FieldPath: "metadata.name"}}},
			{Name: "IP", ValueFrom: &envVarSource{FieldRef: &fieldRef{FieldPath: "status.podIP"}}},
			{Name: "NOEXPAND", ValueFrom: &envVarSource{ConfigMapKeyRef: &keySelector{Name: "two", Key: "A"}}},
		},
	}
	env, err := g.kubeletEnv(c)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]map[string]any{
		"A":           {"exact": "from-two"},
		"B":           {"exact": "env-wins"},
		"DB_PASSWORD": {"any": true},
		"LATER_REF":   {"exact": "$(C)"},
		"C":           {"exact": "c-from-two"},
		"D":           {"regex": `^c-from-two/(?s:.*)/(?s:.*)$`},
		"NAME":        {"exact": "p"},
		"IP":          {"any": true},
		"NOEXPAND":    {"exact": "from-two"},
	}
	if len(env.names) != len(want) {
		t.Errorf("names %v", env.names)
	}
	for n, m := range want {
		v, ok := env.get(n)
		if !ok || !reflect.DeepEqual(brief(v.match()), m) {
			t.Errorf("%s = %v, want %v", n, v.match(), m)
		}
	}
	// containerd: PATH default, HOSTNAME, the image's, then the kubelet's,
	// a later one replacing an earlier one of the same name.
	img := &ImageConfig{Env: []string{"PATH=/img", "B=image", "X=1"}}
	all := containerdEnv(img, literal("host"), env, true)
	for n, v := range map[string]string{"PATH": "/img", "HOSTNAME": "host", "B": "env-wins", "X": "1", "TERM": "xterm"} {
		if got, _ := all.values[n].exact(); got != v {
			t.Errorf("containerd env %s = %q, want %q", n, got, v)
		}
	}
	if all.names[0] != "PATH" {
		t.Errorf("order %v", all.names)
	}
}

func TestSplitCommand(t *testing.T) {
	for in, want := range map[string][]string{
		`sh -c date`:              {"sh", "-c", "date"},
		`sh -c 'echo "hi there"'`: {"sh", "-c", `echo "hi there"`},
		`  a   b  `:               {"a", "b"},
		`printf "a\"b" c\ d`:      {"printf", `a"b`, "c d"},
		`x''`:                     {"x"},
		`''`:                      {""},
	} {
		got, err := SplitCommand(in)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("SplitCommand(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "   ", `a 'b`, `a "b`} {
		if _, err := SplitCommand(bad); err == nil {
			t.Errorf("SplitCommand(%q): want an error", bad)
		}
	}
}

// brief drops a matcher's unset keys (null, false) for comparison.
func brief(m map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range m {
		if v != nil && v != false {
			out[k] = v
		}
	}
	return out
}

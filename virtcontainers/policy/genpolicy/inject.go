package genpolicy

import (
	"fmt"
	"sort"
	"strings"

	yamlv3 "go.yaml.in/yaml/v3"
)

// Inject returns src (the YAML that Load read) with each workload's pod
// annotation set to its value in annotations (by Workload). It edits the
// text, not a re-encoding, so everything else — comments, order, quoting,
// other documents — stays byte for byte as it was. Metadata or annotations
// written in flow style ({...}) are refused: rewrite them in block style.
func Inject(src []byte, in *Input, key string, annotations map[*Workload]string) ([]byte, error) {
	var edits []edit
	for _, w := range in.Workloads {
		v, ok := annotations[w]
		if !ok {
			continue
		}
		e, err := injectOne(in.Docs[w.Doc], w.metaPath, key, v)
		if err != nil {
			return nil, fmt.Errorf("%s %s: --inject: %w", w.Kind, w.Name, err)
		}
		edits = append(edits, e)
	}
	return apply(src, edits)
}

// edit replaces line `line` (1-based) from byte column col (1-based; 0 =
// keep the line) with text, or inserts text before the line.
type edit struct {
	line   int
	col    int
	text   string
	insert bool
}

func injectOne(doc *yamlv3.Node, metaPath []string, key, val string) (edit, error) {
	if len(doc.Content) == 0 {
		return edit{}, fmt.Errorf("empty document")
	}
	quoted := fmt.Sprintf("%q: %q", key, val)
	parent := doc.Content[0]
	// Walk to the mapping holding "metadata".
	for _, k := range metaPath[:len(metaPath)-1] {
		next := mapGet(parent, k)
		if next == nil {
			return edit{}, fmt.Errorf("%s: missing", k)
		}
		parent = next
	}
	if err := blockMapping(parent, strings.Join(metaPath[:len(metaPath)-1], ".")); err != nil {
		return edit{}, err
	}
	meta := mapGet(parent, "metadata")
	if meta == nil || (meta.Kind == yamlv3.ScalarNode && meta.Tag == "!!null") {
		ind := indent(parent)
		return edit{line: parent.Content[0].Line, insert: true,
			text: ind + "metadata:\n" + ind + "  annotations:\n" + ind + "    " + quoted + "\n"}, nil
	}
	if err := blockMapping(meta, "metadata"); err != nil {
		return edit{}, err
	}
	ann := mapGet(meta, "annotations")
	if ann == nil || (ann.Kind == yamlv3.ScalarNode && ann.Tag == "!!null") {
		if ann != nil {
			return edit{}, fmt.Errorf("metadata.annotations: empty; remove the line or give it a key")
		}
		ind := indent(meta)
		return edit{line: meta.Content[0].Line, insert: true, text: ind + "annotations:\n" + ind + "  " + quoted + "\n"}, nil
	}
	if err := blockMapping(ann, "metadata.annotations"); err != nil {
		return edit{}, err
	}
	for i := 0; i+1 < len(ann.Content); i += 2 {
		if ann.Content[i].Value != key {
			continue
		}
		v := ann.Content[i+1]
		if v.Kind != yamlv3.ScalarNode || v.Style&(yamlv3.LiteralStyle|yamlv3.FoldedStyle) != 0 || v.Line != ann.Content[i].Line {
			return edit{}, fmt.Errorf("metadata.annotations[%s]: the existing value is not a one-line scalar; remove it first", key)
		}
		return edit{line: v.Line, col: v.Column, text: fmt.Sprintf("%q", val)}, nil
	}
	return edit{line: ann.Content[0].Line, insert: true, text: indent(ann) + quoted + "\n"}, nil
}

func blockMapping(n *yamlv3.Node, name string) error {
	if n.Kind != yamlv3.MappingNode {
		return fmt.Errorf("%s: not a mapping", name)
	}
	if n.Style&yamlv3.FlowStyle != 0 || len(n.Content) == 0 {
		return fmt.Errorf("%s: written in flow style or empty; write it in block style", name)
	}
	return nil
}

func mapGet(n *yamlv3.Node, key string) *yamlv3.Node {
	if n.Kind != yamlv3.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

// indent is the indentation of a block mapping's keys.
func indent(n *yamlv3.Node) string { return strings.Repeat(" ", n.Content[0].Column-1) }

func apply(src []byte, edits []edit) ([]byte, error) {
	lines := strings.SplitAfter(string(src), "\n")
	// Bottom up, so earlier line numbers stay valid.
	sort.SliceStable(edits, func(i, j int) bool { return edits[i].line > edits[j].line })
	for _, e := range edits {
		if e.line < 1 || e.line > len(lines) {
			return nil, fmt.Errorf("--inject: line %d out of range", e.line)
		}
		l := e.line - 1
		if e.insert {
			lines = append(lines[:l], append([]string{e.text}, lines[l:]...)...)
			continue
		}
		old := lines[l]
		nl := ""
		if strings.HasSuffix(old, "\n") {
			nl = "\n"
		}
		if e.col-1 > len(old) {
			return nil, fmt.Errorf("--inject: column %d out of range on line %d", e.col, e.line)
		}
		lines[l] = old[:e.col-1] + e.text + nl
	}
	return []byte(strings.Join(lines, "")), nil
}

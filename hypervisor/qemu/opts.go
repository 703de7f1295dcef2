package qemu

import (
	"strconv"
	"strings"
)

// opt is one key=value pair of a QEMU option string.
type opt struct{ key, val string }

// opts is a QEMU option string: an optional leading value (a device driver,
// an object type, a machine type) followed by key=value pairs, rendered in
// the order they were added so argv is stable for golden files.
type opts struct {
	head string
	kv   []opt
}

func newOpts(head string) *opts { return &opts{head: head} }

func (o *opts) set(key, val string) *opts {
	o.kv = append(o.kv, opt{key, val})
	return o
}

func (o *opts) setBool(key string, v bool) *opts {
	if v {
		return o.set(key, "on")
	}
	return o.set(key, "off")
}

func (o *opts) setUint(key string, v uint64) *opts { return o.set(key, strconv.FormatUint(v, 10)) }

func (o *opts) setHex(key string, v uint64) *opts { return o.set(key, "0x"+strconv.FormatUint(v, 16)) }

// String renders the option string. QEMU splits on commas; a literal comma
// inside a value is written as two (",,"), which matters for file paths.
func (o *opts) String() string {
	parts := make([]string, 0, len(o.kv)+1)
	if o.head != "" {
		parts = append(parts, escape(o.head))
	}
	for _, p := range o.kv {
		parts = append(parts, p.key+"="+escape(p.val))
	}
	return strings.Join(parts, ",")
}

func escape(s string) string { return strings.ReplaceAll(s, ",", ",,") }

// cmdline accumulates argv. Each method adds one flag and its value so the
// builder reads as a list of QEMU options rather than string assembly.
type cmdline struct{ args []string }

func (c *cmdline) flag(name string)         { c.args = append(c.args, name) }
func (c *cmdline) arg(name, val string)     { c.args = append(c.args, name, val) }
func (c *cmdline) opt(name string, o *opts) { c.arg(name, o.String()) }
func (c *cmdline) object(o *opts)           { c.opt("-object", o) }
func (c *cmdline) device(o *opts)           { c.opt("-device", o) }
func (c *cmdline) chardev(o *opts)          { c.opt("-chardev", o) }
func (c *cmdline) objectJSON(js string)     { c.arg("-object", js) }

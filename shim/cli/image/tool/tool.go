// Package tool is coco-image, also reached as `containerd-shim-coco-v2
// image` (see the parent package, which only execs it): it makes the images the
// guest pulls itself — encrypted for the CoCo KBS key provider, and signed
// with cosign keys — with the same code the guest verifies them with
// (guest-assets/agent/image).
//
//	image encrypt --key-id kbs:///default/key/x --key-file K SRC DST
//	image sign --key cosign.key REF
//
// SRC and DST are registry references, or oci:DIR for an OCI layout (a
// layout with one image or index; DST is written as a new layout).
package tool

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	guest "github.com/coco-runtime/coco/guest-assets/agent/image"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

const (
	exitOK       = 0
	exitFailed   = 1
	exitBadUsage = 2
)

const usage = `usage:
  coco-image encrypt --key-id kbs:///REPO/TYPE/TAG --key-file KEK SRC DST
  coco-image sign --key cosign.key [--plain-http] REF

encrypt: encrypts every layer of SRC (an image or index) with a fresh key wrapped
  under the 32-byte KEK (raw or base64 in KEK), stored with the key id the guest
  will fetch from the KBS, and writes DST. SRC/DST: a registry reference or oci:DIR.
sign: signs REF's digest as 'cosign sign --key' does (no transparency log) and
  pushes sha256-<digest>.sig. The key is cosign's (password in $COSIGN_PASSWORD)
  or a PEM PKCS#8/EC private key.
Registry credentials come from $DOCKER_CONFIG/config.json or ~/.docker/config.json.
`

// Main runs the subcommand; args are the words after "image".
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, usage)
		if len(args) == 0 {
			return exitBadUsage
		}
		return exitOK
	}
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	plain := fs.Bool("plain-http", false, "allow plain HTTP to the registries named")
	var err error
	switch args[0] {
	case "encrypt":
		kid := fs.String("key-id", "", "KBS resource of the KEK, kbs:///repo/type/tag")
		keyFile := fs.String("key-file", "", "file holding the 32-byte KEK (raw or base64)")
		if code, ok := parse(fs, args[1:], 2); !ok {
			return code
		}
		err = encrypt(ctx, *kid, *keyFile, fs.Arg(0), fs.Arg(1), *plain)
	case "sign":
		key := fs.String("key", "", "private key file")
		if code, ok := parse(fs, args[1:], 1); !ok {
			return code
		}
		err = sign(ctx, *key, fs.Arg(0), *plain, stdout)
	default:
		fmt.Fprint(stderr, usage)
		return exitBadUsage
	}
	if err != nil {
		fmt.Fprintf(stderr, "image %s: %v\n", args[0], err)
		return exitFailed
	}
	return exitOK
}

func parse(fs *flag.FlagSet, args []string, nargs int) (int, bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK, false
		}
		return exitBadUsage, false
	}
	if fs.NArg() != nargs {
		fs.Usage()
		return exitBadUsage, false
	}
	return 0, true
}

// registry is the user's registry access: their own docker config, and
// plain HTTP to the registries named on the command line when asked.
func registry(plain bool, refs ...string) guest.Registry {
	var r guest.Registry
	dir := os.Getenv("DOCKER_CONFIG")
	if dir == "" {
		home, _ := os.UserHomeDir()
		dir = home + "/.docker"
	}
	r.Credentials, _ = os.ReadFile(dir + "/config.json")
	if plain {
		for _, s := range refs {
			if n, err := name.ParseReference(s); err == nil {
				r.PlainHTTP = append(r.PlainHTTP, n.Context().RegistryStr())
			}
		}
	}
	return r
}

func encrypt(ctx context.Context, kid, keyFile, src, dst string, plain bool) error {
	if kid == "" || keyFile == "" {
		return errors.New("--key-id and --key-file are required")
	}
	kek, err := os.ReadFile(keyFile)
	if err != nil {
		return err
	}
	enc := guest.Encrypter{Kid: kid, KEK: guest.KEKBytes(kek)}
	reg := registry(plain, src, dst)
	obj, err := read(ctx, src, reg)
	if err != nil {
		return err
	}
	switch o := obj.(type) {
	case v1.Image:
		img, err := enc.Image(o)
		if err != nil {
			return err
		}
		return write(ctx, dst, img, reg)
	case v1.ImageIndex:
		idx, err := enc.Index(o)
		if err != nil {
			return err
		}
		return write(ctx, dst, idx, reg)
	}
	return fmt.Errorf("%s: neither an image nor an index", src)
}

func sign(ctx context.Context, keyFile, ref string, plain bool, stdout io.Writer) error {
	data, err := os.ReadFile(keyFile)
	if err != nil {
		return err
	}
	key, err := guest.ParsePrivateKey(data, []byte(os.Getenv("COSIGN_PASSWORD")))
	if err != nil {
		return err
	}
	d, err := guest.Sign(ctx, ref, key, registry(plain, ref))
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "signed %s@%s\n", ref, d)
	return nil
}

// read loads SRC: oci:DIR (its only manifest) or a registry reference.
func read(ctx context.Context, src string, reg guest.Registry) (any, error) {
	if dir, ok := strings.CutPrefix(src, "oci:"); ok {
		idx, err := layout.ImageIndexFromPath(dir)
		if err != nil {
			return nil, err
		}
		im, err := idx.IndexManifest()
		if err != nil {
			return nil, err
		}
		if len(im.Manifests) != 1 {
			return nil, fmt.Errorf("%s: %d manifests; want one", src, len(im.Manifests))
		}
		d := im.Manifests[0]
		if d.MediaType.IsIndex() {
			return idx.ImageIndex(d.Digest)
		}
		return idx.Image(d.Digest)
	}
	opts, n, err := guest.RemoteOptions(ctx, src, reg)
	if err != nil {
		return nil, err
	}
	desc, err := remote.Get(n, opts...)
	if err != nil {
		return nil, err
	}
	if desc.MediaType.IsIndex() {
		return desc.ImageIndex()
	}
	return desc.Image()
}

func write(ctx context.Context, dst string, obj remote.Taggable, reg guest.Registry) error {
	if dir, ok := strings.CutPrefix(dst, "oci:"); ok {
		p, err := layout.Write(dir, empty.Index)
		if err != nil {
			return err
		}
		if img, ok := obj.(v1.Image); ok {
			return p.AppendImage(img)
		}
		return p.AppendIndex(obj.(v1.ImageIndex))
	}
	opts, n, err := guest.RemoteOptions(ctx, dst, reg)
	if err != nil {
		return err
	}
	if img, ok := obj.(v1.Image); ok {
		return remote.Write(n, img, opts...)
	}
	return remote.WriteIndex(n, obj.(v1.ImageIndex), opts...)
}

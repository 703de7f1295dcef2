package image

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
)

// KeyFetcher returns the plaintext of a KBS resource ("kbs:///repo/type/tag")
// after attestation: a layer's key-encryption key, or a policy's public key.
// The agent passes attest.Service.Resource. It must fail (not return empty
// bytes) when the KBS refuses.
type KeyFetcher func(ctx context.Context, uri string) ([]byte, error)

// Store is one pod's guest-side image store: a directory on guest-only
// storage (the dm-crypt scratch disk, or tmpfs for small images) holding
// unpacked layers shared by the pod's containers. Layout under the root:
//
//	layers/<sha256 hex>/   one unpacked layer, an overlay lowerdir, named by the
//	                       digest of its blob as the manifest lists it; present
//	                       only once every digest of it has been checked
//	staging/<hex>.<n>/     a layer being unpacked; removed on failure
//	containers/<id>/       upper and work directories of a mounted rootfs
//
// Layers are the unit of sharing (not whole rootfs per image) because the
// containers of a pod usually share base layers across different images
// (app + sidecar), because layers can then be fetched, decrypted and unpacked
// in parallel straight from the network with nothing written but the final
// files (no compressed blob, no plaintext temp file), and because overlayfs
// gives each container its own writable layer over the shared ones.
// The price: whiteouts are stored the overlayfs way (0/0 character devices
// and the trusted.overlay.opaque xattr), so the store needs root and a
// filesystem with trusted xattrs (ext4, tmpfs), which the guest has.
type Store struct {
	root  string
	limit int64 // bytes of unpacked layers; 0: no limit
	used  atomic.Int64

	mu       sync.Mutex
	layers   map[string]*layerEntry // by blob digest
	stageSeq int
}

// layerEntry is one layer the store has or is unpacking; done is closed when
// the unpack ended, err says how.
type layerEntry struct {
	done   chan struct{}
	err    error
	diffID string // sha256 of the uncompressed tar, checked against each image's config
	size   int64  // bytes counted against the limit
}

// NewStore opens (creating) a store under root. limit is the number of bytes
// unpacked layers may take (the caller derives it from the scratch disk's
// size, leaving room for the containers' writable layers); 0 means none.
// A store starts empty: the scratch disk is per pod and its key ephemeral,
// so nothing from an earlier boot can be trusted or even read.
func NewStore(root string, limit int64) (*Store, error) {
	if !filepath.IsAbs(root) {
		return nil, fmt.Errorf("image store %q: not an absolute path", root)
	}
	for _, d := range []string{"layers", "staging", "containers"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o700); err != nil {
			return nil, fmt.Errorf("image store: %w", err)
		}
	}
	// Leftovers of a crashed agent are not trusted: start from nothing.
	for _, d := range []string{"layers", "staging"} {
		ents, err := os.ReadDir(filepath.Join(root, d))
		if err != nil {
			return nil, fmt.Errorf("image store: %w", err)
		}
		for _, e := range ents {
			if err := os.RemoveAll(filepath.Join(root, d, e.Name())); err != nil {
				return nil, fmt.Errorf("image store: %w", err)
			}
		}
	}
	return &Store{root: root, limit: limit, layers: map[string]*layerEntry{}}, nil
}

// Root is the store's directory.
func (s *Store) Root() string { return s.root }

// Used is the number of bytes unpacked layers take, as counted for the limit.
func (s *Store) Used() int64 { return s.used.Load() }

// LimitError is returned when unpacking would exceed the store's limit.
type LimitError struct {
	Layer string
	Limit int64
}

func (e *LimitError) Error() string {
	return fmt.Sprintf("layer %s: the image does not fit in the guest image store: its %d-byte limit (set from the scratch disk size) is reached; give the pod a larger guest storage size",
		e.Layer, e.Limit)
}

// reserve counts n more bytes of layer against the limit.
func (s *Store) reserve(layer string, n int64) error {
	if v := s.used.Add(n); s.limit > 0 && v > s.limit {
		s.used.Add(-n)
		return &LimitError{Layer: layer, Limit: s.limit}
	}
	return nil
}

func (s *Store) layerDir(dgst string) string {
	return filepath.Join(s.root, "layers", strings.TrimPrefix(dgst, "sha256:"))
}

// claim returns the entry for a layer and whether the caller must unpack it.
// A concurrent pull of the same layer waits for the first instead of
// downloading it twice; a failed unpack is forgotten so a retry can try again.
func (s *Store) claim(dgst string) (*layerEntry, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.layers[dgst]; ok {
		select {
		case <-e.done:
			if e.err == nil {
				return e, false
			}
		default:
			return e, false
		}
	}
	e := &layerEntry{done: make(chan struct{})}
	s.layers[dgst] = e
	return e, true
}

// stagingDir returns a fresh directory name for a layer being unpacked.
func (s *Store) stagingDir(dgst string) string {
	s.mu.Lock()
	s.stageSeq++
	n := s.stageSeq
	s.mu.Unlock()
	return filepath.Join(s.root, "staging", fmt.Sprintf("%s.%d", strings.TrimPrefix(dgst, "sha256:"), n))
}

// wait blocks until a layer claimed by another pull is unpacked.
func (e *layerEntry) wait(ctx context.Context) error {
	select {
	case <-e.done:
		return e.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

var errNoDiffID = errors.New("no diff_id")

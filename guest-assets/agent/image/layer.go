package image

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"strings"
	"time"

	"github.com/containerd/log"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// layerType is what a layer media type says about its bytes.
type layerType struct {
	compression string // "gzip", "zstd", "" (plain tar)
	encrypted   bool
}

// layerKind maps a layer media type; unknown ones are refused before any
// download so a pull fails fast and says which type it does not know.
func layerKind(mt string) (layerType, error) {
	var t layerType
	if s, ok := strings.CutSuffix(mt, "+encrypted"); ok {
		t.encrypted = true
		mt = s
	}
	switch mt {
	case "application/vnd.oci.image.layer.v1.tar", "application/vnd.oci.image.layer.nondistributable.v1.tar":
	case "application/vnd.oci.image.layer.v1.tar+gzip", "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
		"application/vnd.docker.image.rootfs.diff.tar.gzip", "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip":
		t.compression = "gzip"
	case "application/vnd.oci.image.layer.v1.tar+zstd", "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd":
		t.compression = "zstd"
	default:
		return t, fmt.Errorf("unsupported layer media type %q", mt)
	}
	if t.encrypted && strings.HasPrefix(mt, "application/vnd.docker.") {
		return t, fmt.Errorf("unsupported layer media type %q+encrypted", mt)
	}
	return t, nil
}

// unpackLayer streams one layer from the registry into a staging directory
// and moves it into place only when every check passed:
//
//	blob (ggcr checks its digest and size at EOF)
//	  -> decrypt (ocicrypt checks the HMAC at EOF; we check the plaintext
//	     blob against the digest in the wrapped key)
//	  -> decompress (gzip CRC at EOF)
//	  -> sha256 (the config's diff_id) and the store's size limit
//	  -> tar entries written under the staging root
//
// Nothing else is written anywhere: no blob file, no plaintext temp file.
// The streams are drained to EOF even after the tar's end, because the
// checks above only happen at EOF.
func (s *Store) unpackLayer(ctx context.Context, img v1.Image, l *layerJob, keys KeyFetcher, e *layerEntry) (err error) {
	dgst := l.desc.Digest.String()
	start := time.Now()
	defer func() {
		if err != nil && !strings.Contains(err.Error(), dgst) {
			err = fmt.Errorf("registry %s: layer %s: %w", l.registry, dgst, err)
		}
	}()
	if s.limit > 0 && l.desc.Size > s.limit {
		return &LimitError{Layer: dgst, Limit: s.limit}
	}
	layer, err := img.LayerByDigest(l.desc.Digest)
	if err != nil {
		return err
	}
	var privOpts []byte
	if l.kind.encrypted {
		// Before the download: a refused key fails the pull at once.
		if privOpts, err = unwrapKey(ctx, l.desc, keys); err != nil {
			return err
		}
	}
	blob, err := layer.Compressed()
	if err != nil {
		return err
	}
	defer blob.Close()
	downloaded := &countingReader{r: ctxReader{ctx, blob}}
	var compressed io.Reader = downloaded
	var plainBlob hash.Hash
	var blobDigest string
	if l.kind.encrypted {
		var dec io.Reader
		if dec, blobDigest, err = decryptLayer(compressed, l.desc, privOpts); err != nil {
			return err
		}
		if blobDigest != "" {
			plainBlob = sha256.New()
			dec = io.TeeReader(dec, plainBlob)
		}
		compressed = dec
	}
	tarStream, closeDecomp, err := decompress(compressed, l.kind.compression)
	if err != nil {
		return err
	}
	defer closeDecomp()
	diff := sha256.New()
	budget := &budgetReader{r: tarStream, s: s, layer: dgst}
	uncompressed := io.TeeReader(budget, diff)

	stage := s.stagingDir(dgst)
	if err := os.Mkdir(stage, 0o755); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(stage)
			s.used.Add(-budget.n)
		}
	}()
	if err := unpackTar(stage, uncompressed); err != nil {
		return err
	}
	// Past the tar's end-of-archive blocks: padding, gzip trailer, the rest
	// of the blob. Drained so that every check above sees its EOF.
	if _, err := io.Copy(io.Discard, uncompressed); err != nil {
		return err
	}
	if _, err := io.Copy(io.Discard, compressed); err != nil {
		return err
	}
	if err := blob.Close(); err != nil {
		return err
	}
	if plainBlob != nil {
		if got := "sha256:" + hex.EncodeToString(plainBlob.Sum(nil)); got != blobDigest {
			return fmt.Errorf("decrypted layer digest %s does not match %s in its wrapped key", got, blobDigest)
		}
	}
	got := "sha256:" + hex.EncodeToString(diff.Sum(nil))
	if got != l.diffID {
		return fmt.Errorf("uncompressed digest %s does not match the config's diff_id %s", got, l.diffID)
	}
	if err := os.Rename(stage, s.layerDir(dgst)); err != nil {
		return err
	}
	e.diffID, e.size = got, budget.n
	secs := time.Since(start).Seconds()
	log.G(ctx).WithField("layer", dgst).Infof("layer unpacked: %d bytes downloaded, %d unpacked, %.2fs (%.1f MB/s)",
		downloaded.n, budget.n, secs, float64(downloaded.n)/1e6/max(secs, 1e-3))
	return nil
}

// decompress wraps r by the layer's compression. gzip is multi-member
// (some tools concatenate members).
func decompress(r io.Reader, kind string) (io.Reader, func(), error) {
	switch kind {
	case "gzip":
		z, err := gzip.NewReader(bufio.NewReaderSize(r, 64<<10))
		if err != nil {
			return nil, nil, fmt.Errorf("gzip: %w", err)
		}
		return z, func() { z.Close() }, nil
	case "zstd":
		// One decoder goroutine and a bounded window: the guest's memory
		// is the pod's, and a hostile frame could ask for a huge window.
		z, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(128<<20), zstd.WithDecoderLowmem(true))
		if err != nil {
			return nil, nil, fmt.Errorf("zstd: %w", err)
		}
		return z, z.Close, nil
	}
	return r, func() {}, nil
}

// budgetReader counts the uncompressed tar stream against the store's limit
// as it is read, so a decompression bomb stops at the limit, not at a full
// disk. The tar stream is a little larger than what it unpacks to, which
// errs on the safe side.
type budgetReader struct {
	r     io.Reader
	s     *Store
	layer string
	n     int64
}

func (b *budgetReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if n > 0 {
		if rerr := b.s.reserve(b.layer, int64(n)); rerr != nil {
			return 0, rerr
		}
		b.n += int64(n)
	}
	return n, err
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// ctxReader stops a download when the pull is cancelled (the CRI timeout, or
// another layer's failure).
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

func isCanceled(err error) bool { return errors.Is(err, context.Canceled) }

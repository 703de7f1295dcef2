package initdata

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"fmt"
	"io"
	"os"
	"strings"
)

// maxAnnotationLen bounds the encoded annotation before any decoding work.
// base64 of a gzip stream no larger than the raw limit plus gzip's framing.
const maxAnnotationLen = (MaxSize + 1024) * 4 / 3

// Decode turns the pod annotation value (base64 std of gzip of TOML) into a
// validated document. Decompression stops at MaxSize, so a small annotation
// cannot expand into a large allocation.
func Decode(annotation string) (*InitData, error) {
	annotation = strings.TrimSpace(annotation)
	if annotation == "" {
		return nil, invalid("annotation %s is empty; want base64(gzip(TOML))", AnnotationKey)
	}
	if len(annotation) > maxAnnotationLen {
		return nil, invalid("annotation %s is %d bytes, over the %d-byte limit", AnnotationKey, len(annotation), maxAnnotationLen)
	}
	gz, err := base64.StdEncoding.DecodeString(annotation)
	if err != nil {
		return nil, invalid("annotation %s is not standard base64 (%v); want base64(gzip(TOML))", AnnotationKey, err)
	}
	raw, err := gunzip(gz)
	if err != nil {
		return nil, fmt.Errorf("annotation %s: %w", AnnotationKey, err)
	}
	return Parse(raw)
}

// Encode is the inverse of Decode: base64(gzip(raw)). It does not validate.
func Encode(raw []byte) string {
	return base64.StdEncoding.EncodeToString(compress(raw))
}

// ReadFile loads init-data from a file holding either the raw TOML, a gzip
// of it, or the annotation form base64(gzip(TOML)) — users keep all three.
func ReadFile(path string) (*InitData, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("init-data file: %w", err)
	}
	defer f.Close()
	// Read one byte past the largest accepted encoding to detect oversize.
	b, err := io.ReadAll(io.LimitReader(f, maxAnnotationLen+1))
	if err != nil {
		return nil, fmt.Errorf("init-data file %s: %w", path, err)
	}
	if len(b) > maxAnnotationLen {
		return nil, invalid("file %s is over %d bytes", path, maxAnnotationLen)
	}
	var id *InitData
	switch {
	case isGzip(b):
		var raw []byte
		if raw, err = gunzip(b); err == nil {
			id, err = Parse(raw)
		}
	case looksEncoded(b):
		id, err = Decode(string(b))
	default:
		id, err = Parse(b)
	}
	if err != nil {
		return nil, fmt.Errorf("init-data file %s: %w", path, err)
	}
	return id, nil
}

func isGzip(b []byte) bool { return len(b) >= 2 && b[0] == 0x1f && b[1] == 0x8b }

// looksEncoded reports whether b is base64 of a gzip stream. TOML text never
// decodes to the gzip magic, so this cannot misread a raw document.
func looksEncoded(b []byte) bool {
	t := bytes.TrimSpace(b)
	if len(t) < 4 {
		return false
	}
	head := make([]byte, 3)
	n, err := base64.StdEncoding.Decode(head, t[:4])
	return err == nil && isGzip(head[:n])
}

// gunzip decompresses at most MaxSize bytes; more is an error, not a
// truncation, because the digest must cover the whole document.
func gunzip(gz []byte) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		return nil, invalid("not a gzip stream (%v)", err)
	}
	defer zr.Close()
	// Concatenated gzip members would let two different byte streams carry
	// the same document; accept exactly one.
	zr.Multistream(false)
	raw, err := io.ReadAll(io.LimitReader(zr, MaxSize+1))
	if err != nil {
		return nil, invalid("gzip stream is corrupt (%v)", err)
	}
	if len(raw) > MaxSize {
		return nil, invalid("decompressed document exceeds the %d-byte limit", MaxSize)
	}
	return raw, nil
}

// compress is deterministic (no name, no modification time), so the same
// document always yields the same block image and annotation.
func compress(raw []byte) []byte {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	zw.Write(raw)
	zw.Close()
	return buf.Bytes()
}

package cdh

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"unicode/utf8"

	"github.com/containerd/errdefs"
)

// SealedPrefix starts a sealed secret (guest-components' format):
// "sealed.<header>.<payload>.<signature>".
const SealedPrefix = "sealed."

// UnsealFunc returns a sealed secret's plaintext.
type UnsealFunc func(ctx context.Context, sealed string) ([]byte, error)

// UnsealEnv replaces every NAME=sealed.... entry of env with its plaintext.
// A secret that cannot be unsealed is an error naming the variable (never
// its value): a container that expects a secret must not start with the
// sealed text in its place.
func UnsealEnv(ctx context.Context, env []string, unseal UnsealFunc) error {
	for i, e := range env {
		name, value, ok := strings.Cut(e, "=")
		if !ok || !strings.HasPrefix(value, SealedPrefix) {
			continue
		}
		if unseal == nil {
			return fmt.Errorf("env %s holds a sealed secret, but this guest has no Key Broker Service to unseal it (init-data cdh.toml [kbc] url): %w", name, errdefs.ErrFailedPrecondition)
		}
		plain, err := unseal(ctx, value)
		if err != nil {
			return fmt.Errorf("env %s: unseal: %w", name, err)
		}
		if !utf8.Valid(plain) || bytes.IndexByte(plain, 0) >= 0 {
			return fmt.Errorf("env %s: the unsealed secret is not text without NUL bytes; deliver it as a file: %w", name, errdefs.ErrInvalidArgument)
		}
		env[i] = name + "=" + string(plain)
	}
	return nil
}

// UnsealFiles unseals, in place, every file of files (destination → guest
// path) whose content is a sealed secret. The guest paths are the agent's
// own copies of what the host sent.
func UnsealFiles(ctx context.Context, files map[string]string, unseal UnsealFunc) error {
	for dest, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if !bytes.HasPrefix(b, []byte(SealedPrefix)) {
			continue
		}
		if unseal == nil {
			return fmt.Errorf("file %s holds a sealed secret, but this guest has no Key Broker Service to unseal it (init-data cdh.toml [kbc] url): %w", dest, errdefs.ErrFailedPrecondition)
		}
		// kubectl create secret --from-file keeps a trailing newline.
		plain, err := unseal(ctx, strings.TrimSpace(string(b)))
		if err != nil {
			return fmt.Errorf("file %s: unseal: %w", dest, err)
		}
		st, err := os.Stat(p)
		if err != nil {
			return err
		}
		if err := os.WriteFile(p, plain, st.Mode().Perm()); err != nil {
			return fmt.Errorf("file %s: %w", dest, err)
		}
	}
	return nil
}

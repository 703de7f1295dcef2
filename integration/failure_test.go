//go:build integration

package integration

import "github.com/coco-runtime/coco/integration/harness"

// failureHandlers are filled in once the config schema lands.
func failureHandlers(e *env) []harness.Handler { return nil }

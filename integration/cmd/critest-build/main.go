//go:build integration

// Command critest-build builds (once, into /var/cache/coco) critest, the
// CRI validation suite of cri-tools that integration/critest_test.go runs.
// `make critest` runs it before the integration tests, so that the build
// (~3 min on 2 cores) does not count against their timeout. COCO_CRITEST=0
// skips it, as it skips the test.
package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/coco-runtime/coco/integration/harness"
)

func main() {
	if os.Getenv("COCO_CRITEST") == "0" {
		fmt.Println("critest: COCO_CRITEST=0, not building critest")
		return
	}
	repo, err := harness.RepoRoot()
	if err != nil {
		log.Fatal(err)
	}
	start := time.Now()
	bin, err := harness.BuildCritest(context.Background(), repo, log.Printf)
	if err != nil {
		log.Fatalf("critest: %v", err)
	}
	fmt.Printf("critest: cri-tools %s at %s (%s)\n", harness.CritestVersion, bin, time.Since(start).Round(time.Second))
}

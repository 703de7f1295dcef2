//go:build integration

// Command kube-node builds (once, into /var/cache/coco) the Kubernetes node
// the kubelet tests run: kube-apiserver, kube-controller-manager and
// kubelet from k8s.io/kubernetes, and etcd. `make kube-node` runs it before
// the integration tests, so that a cold build (~15 min on 2 cores) does
// not count against their timeout. COCO_KUBE=0 skips it, as it skips the tests.
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
	if os.Getenv("COCO_KUBE") == "0" {
		fmt.Println("kube-node: COCO_KUBE=0, not building the Kubernetes node")
		return
	}
	repo, err := harness.RepoRoot()
	if err != nil {
		log.Fatal(err)
	}
	start := time.Now()
	if _, err := harness.BuildKube(context.Background(), repo, log.Printf); err != nil {
		log.Fatalf("kube-node: %v", err)
	}
	fmt.Printf("kube-node: Kubernetes %s and etcd %s in %s (%s)\n",
		harness.KubeVersion, harness.EtcdVersion, harness.KubeCacheDir(), time.Since(start).Round(time.Second))
}

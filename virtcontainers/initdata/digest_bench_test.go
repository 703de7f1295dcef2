package initdata

import (
	"fmt"
	"strings"
	"testing"

	"github.com/coco-runtime/coco/hypervisor/tee"
)

// benchDoc is an init-data document with a policy of about size bytes.
func benchDoc(alg string, size int) string {
	policy := strings.Repeat("# padding line of a rego policy\n", size/32)
	return fmt.Sprintf("version = \"0.1.0\"\nalgorithm = %q\n[data]\n\"aa.toml\" = '''\n[token_configs]\n[token_configs.kbs]\nurl = \"http://127.0.0.1:8080\"\n'''\n\"policy.rego\" = '''\npackage agent_policy\ndefault AllowRequestsFailingPolicy := true\n%s'''\n", alg, policy)
}

// BenchmarkDigest is the shim's per-pod init-data work: decode the
// annotation, parse and validate, digest, and fit the digest to the TEE's
// launch-data field.
func BenchmarkDigest(b *testing.B) {
	for _, alg := range []string{"sha256", "sha384", "sha512"} {
		for _, size := range []int{1 << 10, 64 << 10} {
			doc := benchDoc(alg, size)
			ann := Encode([]byte(doc))
			b.Run(fmt.Sprintf("%s/%dKiB", alg, size>>10), func(b *testing.B) {
				b.SetBytes(int64(len(doc)))
				b.ReportAllocs()
				for b.Loop() {
					id, err := Decode(ann)
					if err != nil {
						b.Fatal(err)
					}
					if ld, _ := Binding(tee.SNP, id); len(ld) == 0 {
						b.Fatal("no launch data for snp")
					}
				}
			})
		}
	}
}

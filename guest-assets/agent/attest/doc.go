// Package attest is the guest's attestation client for the Trustee Key
// Broker Service (KBS protocol 0.4.0, "RCAR": request, challenge,
// attestation, response), what guest-components' attestation agent and
// confidential data hub do for kata guests, as a library the agent holds.
//
// Trust: the KBS settings come only from the owner's init-data (aa.toml,
// cdh.toml), which the TEE binds into its launch data; the host can neither
// point the guest at another KBS nor relax certificate pinning. The KBS
// itself is outside the TEE: every answer is bounded in size and checked, and
// secrets arrive wrapped (JWE) to an ephemeral key that never leaves this
// package.
//
// Flow (trustee kbs/docs/kbs_attestation_protocol.md; guest-components
// kbs_protocol rcar_client.rs):
//
//  1. POST {url}/kbs/v0/auth {"version":"0.4.0","tee":...,"extra-params":
//     {"supported-hash-algorithms":[...]}} → {"nonce",...} and the
//     kbs-session-id cookie;
//  2. a fresh EC P-256 key; report data = H(JCS({"additional-evidence":"",
//     "nonce":..., "tee-pubkey":<JWK>})), H = sha384 unless the KBS selects
//     another;
//  3. POST {url}/kbs/v0/attest {"init-data","runtime-data","tee-evidence"}
//     → {"token": <JWT>};
//  4. GET {url}/kbs/v0/resource/<repo>/<type>/<tag> with the cookie and
//     "Authorization: Bearer <token>" → a flattened JWE wrapped to the key.
//
// Files: config.go (aa.toml, cdh.toml), attester.go and snp.go (evidence),
// client.go (RCAR, sessions), fetch.go (resources), sealed.go (sealed
// secrets), service.go (the facade), jcs/ (RFC 8785).
package attest

package kbs

import (
	"bytes"
	"crypto/rand"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"time"
)

// KnownTees are kbs-types' Tee names (serde lowercase); /auth refuses others
// the way Trustee's Request deserialisation does.
var KnownTees = []string{"az-snp-vtpm", "az-tdx-vtpm", "nvidia", "sgx", "snp", "tdx", "cca", "csv", "se", "hygondcu", "tpm", "sample", "sampledevice"}

type session struct {
	id      string
	tee     string
	nonce   string
	expires time.Time
	token   string // non-empty once attested
}

func (ss *session) cookie() *http.Cookie {
	return &http.Cookie{Name: SessionCookie, Value: ss.id, Expires: ss.expires}
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("kbs: randomness: %v", err))
	}
	return b
}

var semverRE = regexp.MustCompile(`^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$`)

// decodeFields unmarshals a JSON object and insists the named members exist,
// as serde does for non-Option fields.
func decodeFields(body []byte, v any, required ...string) error {
	var present map[string]json.RawMessage
	if err := json.Unmarshal(body, &present); err != nil {
		return err
	}
	for _, f := range required {
		if _, ok := present[f]; !ok {
			return fmt.Errorf("missing field `%s`", f)
		}
	}
	return json.Unmarshal(body, v)
}

// Trustee wraps every /auth failure as RcarAuthFailed inside AttestationError,
// answered 401 like all its errors but the unknown-plugin ones.
func (s *Server) authFail(w http.ResponseWriter, reason string) {
	s.fail(w, "auth", http.StatusUnauthorized, ErrAttestation, "Attestation error: RCAR handshake Auth failed: "+reason)
}

func (s *Server) handleAuth(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		s.authFail(w, "read request: "+err.Error())
		return
	}
	var req struct {
		Version     string          `json:"version"`
		Tee         string          `json:"tee"`
		ExtraParams json.RawMessage `json:"extra-params"`
	}
	if err := decodeFields(body, &req, "version", "tee", "extra-params"); err != nil {
		s.authFail(w, "deserialize Request: "+err.Error())
		return
	}
	if !slices.Contains(KnownTees, req.Tee) {
		s.authFail(w, fmt.Sprintf("deserialize Request: unknown variant `%s`", req.Tee))
		return
	}
	if !semverRE.MatchString(req.Version) {
		s.authFail(w, "failed to parse KBS version: "+req.Version)
		return
	}
	if req.Version != ProtocolVersion {
		s.authFail(w, fmt.Sprintf("KBS Client Protocol Version Mismatch: expect =%s while the request is %s", ProtocolVersion, req.Version))
		return
	}
	now := s.opts.Now()
	ss := &session{
		id:      hex.EncodeToString(randomBytes(16)), // a simple-form uuid's length
		tee:     req.Tee,
		nonce:   base64.StdEncoding.EncodeToString(randomBytes(32)),
		expires: now.Add(s.opts.SessionTimeout),
	}
	s.mu.Lock()
	for id, old := range s.sessions {
		if now.After(old.expires) {
			delete(s.sessions, id)
		}
	}
	s.sessions[ss.id] = ss
	s.mu.Unlock()
	http.SetCookie(w, ss.cookie())
	// Trustee sends extra-params "" for every tee but se, which this test
	// KBS does not verify anyway.
	writeJSON(w, struct {
		Nonce       string `json:"nonce"`
		ExtraParams string `json:"extra-params"`
	}{ss.nonce, ""})
}

// lookupSession finds a live session; expired ones are dropped, as
// Trustee's SessionMap.get does.
func (s *Server) lookupSession(id string) (*session, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ss, ok := s.sessions[id]
	if !ok {
		return nil, "session not found"
	}
	if s.opts.Now().After(ss.expires) {
		delete(s.sessions, id)
		return nil, "session expired"
	}
	return ss, ""
}

type attestation struct {
	InitData *struct {
		Format string `json:"format"`
		Body   string `json:"body"`
	} `json:"init-data"`
	RuntimeData struct {
		Nonce     string          `json:"nonce"`
		TeePubKey json.RawMessage `json:"tee-pubkey"`
	} `json:"runtime-data"`
	TeeEvidence struct {
		PrimaryEvidence    json.RawMessage `json:"primary_evidence"`
		AdditionalEvidence *string         `json:"additional_evidence"`
	} `json:"tee-evidence"`
}

// Trustee's RcarAttestFailed prints no cause; this one appends it, because
// a test wants to see why, and clients only look at the status and type.
func (s *Server) attestFail(w http.ResponseWriter, reason string) {
	s.fail(w, "attest", http.StatusUnauthorized, ErrAttestation, "Attestation error: RCAR handshake Attest failed: "+reason)
}

func (s *Server) handleAttest(w http.ResponseWriter, r *http.Request) {
	c, err := r.Cookie(SessionCookie)
	if err != nil {
		s.attestFail(w, "cookie not found")
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		s.attestFail(w, "read request: "+err.Error())
		return
	}
	var att attestation
	if err := decodeFields(body, &att, "runtime-data", "tee-evidence"); err != nil {
		s.attestFail(w, "deserialize Attestation: "+err.Error())
		return
	}
	ss, why := s.lookupSession(c.Value)
	if ss == nil {
		s.attestFail(w, why)
		return
	}
	s.mu.Lock()
	token := ss.token
	s.mu.Unlock()
	if token != "" {
		// Trustee answers a repeated /attest on an attested session with
		// the token it already issued, without looking at the evidence.
		http.SetCookie(w, ss.cookie())
		writeJSON(w, map[string]string{"token": token})
		return
	}
	pub, err := parseTeePubKey(att.RuntimeData.TeePubKey)
	if err != nil {
		s.attestFail(w, "deserialize Attestation: tee-pubkey: "+err.Error())
		return
	}
	if att.TeeEvidence.PrimaryEvidence == nil || att.TeeEvidence.AdditionalEvidence == nil {
		s.attestFail(w, "deserialize Attestation: tee-evidence needs primary_evidence and additional_evidence (a string)")
		return
	}
	if att.RuntimeData.Nonce != ss.nonce {
		s.attestFail(w, "the nonce in the handshake session is different from the client side in KBS protocol's Attestation message")
		return
	}
	additional := *att.TeeEvidence.AdditionalEvidence
	if additional != "" {
		s.attestFail(w, "additional evidence (devices) is not supported by this test KBS")
		return
	}
	if ss.tee != "sample" {
		s.attestFail(w, fmt.Sprintf("verify TEE evidence failed: tee %q is not supported by this test KBS (only sample)", ss.tee))
		return
	}
	var idata *initData
	if att.InitData != nil {
		if att.InitData.Format != "toml" {
			s.attestFail(w, "Unsupported initdata format: "+att.InitData.Format)
			return
		}
		if idata, err = parseInitData([]byte(att.InitData.Body)); err != nil {
			s.attestFail(w, "verify TEE evidence failed: init-data: "+err.Error())
			return
		}
	}
	// The binding the attester put in its report (specs §2): the hash of
	// the JCS form of exactly these three members, rebuilt here from what
	// the session knows rather than trusted from the client.
	runtimeData := map[string]any{"additional-evidence": additional, "nonce": ss.nonce, "tee-pubkey": pub.jwk()}
	canon, err := canonicalValue(runtimeData)
	if err != nil {
		s.attestFail(w, "canonicalize runtime data: "+err.Error())
		return
	}
	want := sha512.Sum384(canon)
	sample, err := verifySample(att.TeeEvidence.PrimaryEvidence, want[:])
	if err != nil {
		s.attestFail(w, "verify TEE evidence failed: "+err.Error())
		return
	}
	s.mu.Lock()
	ref := s.initData
	s.mu.Unlock()
	if err := ref.check(idata); err != nil {
		s.attestFail(w, "verify TEE evidence failed: "+err.Error())
		return
	}
	token, err = s.issueToken(sample, pub, ss.nonce, idata)
	if err != nil {
		s.attestFail(w, "sign token: "+err.Error())
		return
	}
	s.mu.Lock()
	if ss.token == "" { // a concurrent /attest may have won; keep its token
		ss.token = token
	}
	token = ss.token
	s.mu.Unlock()
	http.SetCookie(w, ss.cookie())
	writeJSON(w, map[string]string{"token": token})
}

// verifySample is Trustee's sample verifier: report_data (standard base64)
// must equal the expected digest exactly, with no padding to 64 bytes.
func verifySample(raw json.RawMessage, want []byte) (map[string]any, error) {
	var ev struct {
		Svn        *string `json:"svn"`
		ReportData string  `json:"report_data"`
	}
	if err := json.Unmarshal(raw, &ev); err != nil || ev.Svn == nil {
		return nil, fmt.Errorf("Deserialize Quote failed: want {\"svn\":string,\"report_data\":string}")
	}
	got, err := base64.StdEncoding.DecodeString(ev.ReportData)
	if err != nil {
		return nil, fmt.Errorf("base64 decode report data for sample evidence: %v", err)
	}
	if !bytes.Equal(got, want) {
		return nil, fmt.Errorf("REPORT_DATA is different from that in Sample Quote (key binding: got %x, want sha384(JCS(runtime data)) %x)", got, want)
	}
	return map[string]any{
		"svn":              *ev.Svn,
		"launch_digest":    "abcde",
		"platform_version": map[string]any{"major": 1, "minor": 4},
		"debug":            false,
		"report_data":      ev.ReportData,
	}, nil
}

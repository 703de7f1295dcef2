// Package server is coco-policy's side of policyproc: it compiles policies
// and evaluates rules with OPA (policy/engine) for the agent.
package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/coco-runtime/coco/guest-assets/agent/policyproc"
	"github.com/coco-runtime/coco/virtcontainers/policy/engine"
)

// MaxPolicies is how many compiled policies the engine keeps. A policy
// replaced by a newer one is never evaluated again, so the oldest goes
// first; a host allowed to call SetPolicy cannot grow the engine's memory.
const MaxPolicies = 8

// Serve answers the agent's requests from r on w until r ends (nil) or the
// exchange breaks.
func Serve(r io.Reader, w io.Writer) error {
	s := &state{engines: map[uint64]*engine.Engine{}}
	dec, enc := json.NewDecoder(r), json.NewEncoder(w)
	for {
		var req policyproc.Request
		if err := dec.Decode(&req); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("coco-policy: read request: %w", err)
		}
		if err := enc.Encode(s.handle(req)); err != nil {
			return fmt.Errorf("coco-policy: write response: %w", err)
		}
	}
}

type state struct {
	engines map[uint64]*engine.Engine
	order   []uint64 // handles, oldest first
	next    uint64
}

func (s *state) handle(req policyproc.Request) policyproc.Response {
	switch req.Op {
	case policyproc.OpCompile:
		e, err := engine.Compile(req.Source)
		if err != nil {
			return policyproc.Response{Error: err.Error()}
		}
		s.next++
		s.engines[s.next] = e
		s.order = append(s.order, s.next)
		if len(s.order) > MaxPolicies {
			delete(s.engines, s.order[0])
			s.order = s.order[1:]
		}
		return policyproc.Response{Handle: s.next}
	case policyproc.OpEval:
		e := s.engines[req.Handle]
		if e == nil {
			return policyproc.Response{Error: fmt.Sprintf("no compiled policy %d (replaced by newer ones)", req.Handle)}
		}
		// Numbers stay exact (json.Number), as OPA reads them from Go values.
		d := json.NewDecoder(bytes.NewReader(req.Input))
		d.UseNumber()
		var input any
		if err := d.Decode(&input); err != nil {
			return policyproc.Response{Error: fmt.Sprintf("policy input: %v", err)}
		}
		dec, err := e.Decide(context.Background(), req.Rule, input)
		if err != nil {
			return policyproc.Response{Error: err.Error()}
		}
		return policyproc.Response{Allowed: dec.Allowed, Reason: dec.Reason}
	default:
		return policyproc.Response{Error: fmt.Sprintf("unknown op %q", req.Op)}
	}
}

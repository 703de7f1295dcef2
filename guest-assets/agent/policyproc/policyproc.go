// Package policyproc runs the agent's Rego engine in its own process,
// coco-policy, started the first time a policy needs compiling. The agent
// itself does not link OPA: OPA's package initialisation costs ~250 ms of
// guest CPU under TCG and a few MB of heap, which a guest whose policy is
// the built-in allow-all (the coco-dev class) never needs.
//
// The two talk over the child's stdin and stdout, one JSON Request and one
// JSON Response per line, one exchange at a time. Anything going wrong with
// the process (it exits, answers garbage, or does not answer within the
// timeout) breaks the Proc for good: every later evaluation fails, and the
// agent's gate turns a failed evaluation into a denial.
package policyproc

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	runc "github.com/containerd/go-runc"
	"google.golang.org/protobuf/proto"

	"github.com/coco-runtime/coco/virtcontainers/policy"
)

// GuestPath is where the initrd puts coco-policy (a tools disk carries it
// as Name at its root).
const (
	GuestPath = "/usr/bin/coco-policy"
	Name      = "coco-policy"
)

// Request is one line the agent writes to coco-policy.
type Request struct {
	Op     string          `json:"op"`               // OpCompile or OpEval
	Source string          `json:"source,omitempty"` // compile: the Rego module
	Handle uint64          `json:"handle,omitempty"` // eval: what compile returned
	Rule   string          `json:"rule,omitempty"`   // eval: e.g. "ExecProcessRequest"
	Input  json.RawMessage `json:"input,omitempty"`  // eval: policy.Input of the request
}

// Response is coco-policy's answer to one Request.
type Response struct {
	Handle  uint64 `json:"handle,omitempty"`  // compile: names the compiled policy
	Allowed bool   `json:"allowed,omitempty"` // eval: the rule's value was true
	Reason  string `json:"reason,omitempty"`  // eval, denied: the policy's explanation (engine.Decide)
	Error   string `json:"error,omitempty"`   // compile or eval failed: why
}

// Ops of a Request.
const (
	OpCompile = "compile"
	OpEval    = "eval"
)

// Reaper starts a command and reports its exit. The agent is PID 1 and
// reaps every child itself; containerd's reaper.Default is the real one.
type Reaper interface {
	Start(*exec.Cmd) (chan runc.Exit, error)
	Wait(*exec.Cmd, chan runc.Exit) (int, error)
}

// DefaultTimeout bounds one exchange: a policy that loops, or an engine that
// hangs, denies instead of stalling the host's requests.
const DefaultTimeout = 10 * time.Second

// Proc is the coco-policy process, started on first use. It is safe for
// concurrent use; exchanges are serialised.
type Proc struct {
	argv    []string
	reaper  Reaper
	timeout time.Duration
	before  func() error // runs before the first start; nil: nothing to wait for

	mu     sync.Mutex
	cmd    *exec.Cmd
	stdin  *os.File // our ends of the child's stdin and stdout
	stdout *os.File
	enc    *json.Encoder
	dec    *json.Decoder
	broken error // once set, every exchange fails with it
}

// New returns a Proc that will run argv (GuestPath and its arguments) under
// reaper. Nothing starts until the first Compile.
func New(reaper Reaper, argv ...string) *Proc {
	return &Proc{argv: argv, reaper: reaper, timeout: DefaultTimeout}
}

// StartAfter makes the engine's start wait for f: the agent waits there for
// the disk that carries coco-policy. An error from f fails the start.
func (p *Proc) StartAfter(f func() error) *Proc {
	p.before = f
	return p
}

// Compile compiles a policy in the engine. A policy that does not parse or
// compile is errdefs.ErrInvalidArgument with the compiler's message; an
// engine that cannot run is errdefs.ErrUnavailable.
func (p *Proc) Compile(source string) (*Rego, error) {
	resp, err := p.exchange(Request{Op: OpCompile, Source: source})
	if err != nil {
		return nil, err
	}
	if resp.Error != "" {
		return nil, fmt.Errorf("%s: %w", resp.Error, errdefs.ErrInvalidArgument)
	}
	if resp.Handle == 0 {
		p.mu.Lock()
		defer p.mu.Unlock()
		return nil, p.breakLocked(errors.New("policy engine answered a compile without a handle"))
	}
	return &Rego{proc: p, handle: resp.Handle}, nil
}

// Close ends the engine: it exits when its stdin closes.
func (p *Proc) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closePipes()
	if p.broken == nil {
		p.broken = errors.New("policy engine closed")
	}
}

// Rego is one policy compiled in the engine; it implements the agent's
// policy.Policy.
type Rego struct {
	proc   *Proc
	handle uint64
}

// Evaluate asks the engine for the request's rule. Only true allows.
func (r *Rego) Evaluate(ctx context.Context, method string, req proto.Message) error {
	rule := policy.RuleName(req)
	doc, err := policy.Input(ctx, req)
	if err != nil {
		return err
	}
	in, err := json.Marshal(doc)
	if err != nil {
		return fmt.Errorf("policy input of %s: %w", method, err)
	}
	return r.EvaluateInput(method, rule, in)
}

// EvaluateInput asks the engine for rule with an input document already
// built (policy.Input, as JSON); `policy check` on the host uses it for a
// recorded input. A denial is errdefs.ErrPermissionDenied carrying the
// policy's reasons.
func (r *Rego) EvaluateInput(method, rule string, in json.RawMessage) error {
	resp, err := r.proc.exchange(Request{Op: OpEval, Handle: r.handle, Rule: rule, Input: in})
	if err != nil {
		return err
	}
	if resp.Error != "" {
		return fmt.Errorf("evaluate agent policy rule %s.%s: %s", policy.Package, rule, resp.Error)
	}
	if !resp.Allowed {
		// The engine bounded the reason; bound it again here, since a
		// broken engine must not make the agent send the host more.
		return policy.DeniedBecause(method, rule, policy.BoundReasonText(resp.Reason))
	}
	return nil
}

func (p *Proc) exchange(req Request) (Response, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.broken != nil {
		return Response{}, p.broken
	}
	if p.cmd == nil {
		if err := p.start(); err != nil {
			return Response{}, p.failLocked(err)
		}
	}
	// Deadlines on the pipes bound the exchange: an engine that stops
	// reading or answering is killed rather than waited for.
	deadline := time.Now().Add(p.timeout)
	p.stdin.SetWriteDeadline(deadline)
	p.stdout.SetReadDeadline(deadline)
	var resp Response
	err := p.enc.Encode(req)
	if err == nil {
		err = p.dec.Decode(&resp)
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		err = fmt.Errorf("policy engine did not answer a %s within %s", req.Op, p.timeout)
	} else if err != nil {
		err = fmt.Errorf("talking to the policy engine: %w", err)
	}
	if err != nil {
		return Response{}, p.breakLocked(err)
	}
	return resp, nil
}

func (p *Proc) start() error {
	if p.before != nil {
		if err := p.before(); err != nil {
			return err
		}
	}
	// Our own pipes, not cmd.StdinPipe: *os.File pipes take deadlines.
	inR, inW, err := os.Pipe()
	if err != nil {
		return err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return err
	}
	cmd := exec.Command(p.argv[0], p.argv[1:]...)
	cmd.Stdin, cmd.Stdout = inR, outW
	cmd.Stderr = os.Stderr // its own failures go to the console
	exits, err := p.reaper.Start(cmd)
	inR.Close() // the child has its copies
	outW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		return fmt.Errorf("start %s: %w (the initrd carries it: rebuild with `make coco-policy initrd`)", p.argv[0], err)
	}
	p.cmd, p.stdin, p.stdout = cmd, inW, outR
	p.enc, p.dec = json.NewEncoder(inW), json.NewDecoder(bufio.NewReader(outR))
	go func() {
		status, _ := p.reaper.Wait(cmd, exits)
		p.fail(fmt.Errorf("policy engine %s exited (status %d)", p.argv[0], status))
	}()
	return nil
}

// breakLocked gives up on a live engine that misbehaved: it is killed (the
// exit watcher then closes the pipes) and every later exchange fails.
func (p *Proc) breakLocked(err error) error {
	if p.broken == nil && p.cmd != nil {
		p.cmd.Process.Kill()
	}
	return p.failLocked(err)
}

// fail breaks the Proc with err unless it is already broken, and returns
// the error every later exchange gets. The exit watcher calls it.
func (p *Proc) fail(err error) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closePipes()
	return p.failLocked(err)
}

func (p *Proc) failLocked(err error) error {
	if p.broken == nil {
		p.broken = fmt.Errorf("%w: %w", err, errdefs.ErrUnavailable)
	}
	return p.broken
}

// closePipes ends our side of the exchange; the engine exits on EOF.
func (p *Proc) closePipes() {
	if p.stdin != nil {
		p.stdin.Close()
		p.stdout.Close()
	}
}

// ChildReaper is a Reaper for a process that is not PID 1 (the host's
// `containerd-shim-coco-v2 policy check` runs coco-policy with it): it
// waits for the child itself.
type ChildReaper struct{}

// Start implements Reaper.
func (ChildReaper) Start(c *exec.Cmd) (chan runc.Exit, error) {
	if err := c.Start(); err != nil {
		return nil, err
	}
	ch := make(chan runc.Exit, 1)
	go func() {
		c.Wait()
		ch <- runc.Exit{Pid: c.Process.Pid, Status: c.ProcessState.ExitCode()}
	}()
	return ch, nil
}

// Wait implements Reaper.
func (ChildReaper) Wait(_ *exec.Cmd, ch chan runc.Exit) (int, error) { return (<-ch).Status, nil }

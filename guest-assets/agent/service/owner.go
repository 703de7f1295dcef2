package service

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/containerd/log"

	"github.com/coco-runtime/coco/guest-assets/agent/policy"
)

// owner is the pod owner's word: the init-data the agent loads and verifies
// once, at start, before it judges any request but Health. Its policy.rego
// replaces the image's default policy before SetupSandbox is checked, so the
// owner's policy judges the sandbox set-up too.
type owner struct {
	done    chan struct{}
	err     error // set before done closes
	policy  bool  // the owner's init-data carries a policy
	refuse  sync.Once
	destroy func(reason string)
}

// loadOwner starts loading in the background; wait blocks on it.
func loadOwner(ctx context.Context, load func(context.Context) (string, error), compile PolicyCompiler, gate *policy.Gate, destroy func(string)) *owner {
	o := &owner{done: make(chan struct{}), destroy: destroy}
	go func() {
		defer close(o.done)
		text, err := load(ctx)
		if err != nil {
			o.err = fmt.Errorf("init-data: %w", err)
			return
		}
		if text == "" {
			return
		}
		p, err := compilePolicy(compile, text)
		if err != nil {
			o.err = fmt.Errorf("init-data policy.rego: %w", err)
			return
		}
		gate.SetPolicy(p)
		o.policy = true
		log.G(ctx).Info("the owner's policy from init-data is in force")
	}()
	return o
}

// refusalGrace is how long the guest lives on after its first refusal,
// refusing everything: the server's shutdown may close a connection whose
// answer is still queued, and the host must read why. A host that heeds the
// answer stops the VM itself well before.
const refusalGrace = time.Second

// wait returns once the owner's init-data is in force, or why it cannot be.
// The first refusal powers the guest off once its answer is on the way: a
// guest that cannot show the owner's word is in force has nothing to serve.
func (o *owner) wait(ctx context.Context) error {
	select {
	case <-o.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	if o.err != nil {
		o.refuse.Do(func() { time.AfterFunc(refusalGrace, func() { o.destroy("refusing to serve: " + o.err.Error()) }) })
		return o.err
	}
	return nil
}

// ownerPolicy says whether the owner's init-data carries a policy. Only
// meaningful after wait returned nil.
func (o *owner) ownerPolicy() bool {
	if o == nil {
		return false
	}
	select {
	case <-o.done:
		return o.policy
	default:
		return false
	}
}

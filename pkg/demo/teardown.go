package demo

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// teardown is a stack of undo steps: each step of the demo that creates
// something pushes how to remove it. The demo runs most of them itself,
// in order and narrated; unwind runs whatever is left, newest first, when
// the demo ends early (a failure, or Ctrl-C).
type teardown struct {
	steps []*undo
}

// undo removes one thing the demo created. It runs at most once.
type undo struct {
	what string
	fn   func(context.Context) error
	ran  bool
}

// push records how to remove something just created.
func (t *teardown) push(what string, fn func(context.Context) error) *undo {
	u := &undo{what: what, fn: fn}
	t.steps = append(t.steps, u)
	return u
}

// run runs the step unless it already ran.
func (u *undo) run(ctx context.Context) error {
	if u.ran {
		return nil
	}
	u.ran = true
	return u.fn(ctx)
}

// unwind runs every step that has not run, newest first, and returns
// every error. It carries on past failures: each step removes what it can.
func (t *teardown) unwind(ctx context.Context, say func(string, ...any)) error {
	var errs []error
	for i := len(t.steps) - 1; i >= 0; i-- {
		u := t.steps[i]
		if u.ran {
			continue
		}
		start := time.Now()
		err := u.run(ctx)
		if err != nil {
			say("   %-26s %7s  FAILED: %v", u.what, seconds(time.Since(start)), err)
			errs = append(errs, fmt.Errorf("%s: %w", u.what, err))
			continue
		}
		say("   %-26s %7s  done", u.what, seconds(time.Since(start)))
	}
	return errors.Join(errs...)
}

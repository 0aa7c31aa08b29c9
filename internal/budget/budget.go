// Package budget bounds the memory a server spends on request buffers
// across all of its connections.
package budget

import "sync"

// Budget hands out bytes up to a total. A request larger than the total
// is admitted alone, once nothing else is held, so it cannot wait forever.
type Budget struct {
	mu    sync.Mutex
	cond  sync.Cond
	total int64
	held  int64
}

// New returns a budget of total bytes.
func New(total int64) *Budget {
	b := &Budget{total: total}
	b.cond.L = &b.mu
	return b
}

// Acquire blocks until n bytes fit in the budget, then takes them.
func (b *Budget) Acquire(n int64) {
	if n <= 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for b.held > 0 && b.held+n > b.total {
		b.cond.Wait()
	}
	b.held += n
}

// Release returns n bytes taken by Acquire.
func (b *Budget) Release(n int64) {
	if n <= 0 {
		return
	}
	b.mu.Lock()
	b.held -= n
	b.mu.Unlock()
	b.cond.Broadcast()
}

// Held returns the bytes currently taken.
func (b *Budget) Held() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.held
}

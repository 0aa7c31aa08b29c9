package nbd

import "sync"

// limiter bounds the requests of one connection in flight, by count and
// by buffer bytes. One goroutine (the request reader) acquires; handler
// goroutines release.
type limiter struct {
	mu       sync.Mutex
	cond     sync.Cond
	count    int
	bytes    int64
	maxCount int
	maxBytes int64
}

// newLimiter returns a limiter admitting maxCount requests holding at most
// maxBytes between them.
func newLimiter(maxCount int, maxBytes int64) *limiter {
	l := &limiter{maxCount: maxCount, maxBytes: maxBytes}
	l.cond.L = &l.mu
	return l
}

// acquire blocks until a request holding n bytes fits. A request larger
// than maxBytes is admitted once nothing else is in flight.
func (l *limiter) acquire(n int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for l.count >= l.maxCount || (l.count > 0 && l.bytes+n > l.maxBytes) {
		l.cond.Wait()
	}
	l.count++
	l.bytes += n
}

// release returns what acquire(n) took.
func (l *limiter) release(n int64) {
	l.mu.Lock()
	l.count--
	l.bytes -= n
	l.mu.Unlock()
	l.cond.Broadcast()
}

// inFlight returns the number of requests in flight.
func (l *limiter) inFlight() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.count
}

// waitIdle blocks until no request is in flight.
func (l *limiter) waitIdle() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for l.count > 0 {
		l.cond.Wait()
	}
}

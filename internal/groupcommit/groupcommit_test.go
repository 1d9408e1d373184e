package groupcommit

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
)

// TestManyCallersFewWrites: 500 concurrent callers whose writes each
// block until released are written in a handful of batches, each caller
// answered with its batch's result, every item written exactly once.
func TestManyCallersFewWrites(t *testing.T) {
	var writes atomic.Int64
	var mu sync.Mutex
	seen := map[int]int{}
	release := make(chan struct{})
	c := New(func(ctx context.Context, items []int) error {
		<-release // the first write holds everyone else back
		writes.Add(1)
		mu.Lock()
		defer mu.Unlock()
		for _, it := range items {
			seen[it]++
		}
		return nil
	}, 256)
	defer c.Close()
	const n = 500
	var wg sync.WaitGroup
	var queued sync.WaitGroup
	queued.Add(n)
	for i := range n {
		wg.Go(func() {
			queued.Done()
			if err := c.Add(context.Background(), i); err != nil {
				t.Errorf("Add(%d) = %v", i, err)
			}
		})
	}
	queued.Wait()
	close(release)
	wg.Wait()
	if len(seen) != n {
		t.Fatalf("%d distinct items written, want %d", len(seen), n)
	}
	for it, k := range seen {
		if k != 1 {
			t.Fatalf("item %d written %d times", it, k)
		}
	}
	// At most one caller per batch would be n writes.
	if w := writes.Load(); w > 20 {
		t.Errorf("%d callers took %d writes, want them batched (at most 20)", n, w)
	}
	t.Logf("%d callers, %d writes", n, writes.Load())
}

// TestBatchErrorReachesEveryCaller: a failed write fails each of its
// callers, and the next batch is written anew.
func TestBatchErrorReachesEveryCaller(t *testing.T) {
	boom := errors.New("disk full")
	fail := atomic.Bool{}
	fail.Store(true)
	c := New(func(ctx context.Context, items []string) error {
		if fail.Load() {
			return boom
		}
		return nil
	}, 8)
	defer c.Close()
	if err := c.Add(context.Background(), "a"); !errors.Is(err, boom) {
		t.Fatalf("Add during a failing write = %v, want %v", err, boom)
	}
	fail.Store(false)
	if err := c.Add(context.Background(), "b"); err != nil {
		t.Fatalf("Add after the store recovered = %v", err)
	}
	c.Close()
	if err := c.Add(context.Background(), "c"); !errors.Is(err, ErrClosed) {
		t.Fatalf("Add after Close = %v, want %v", err, ErrClosed)
	}
}

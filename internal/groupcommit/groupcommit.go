// Package groupcommit turns many callers' small writes into few
// transactions: each caller hands its item over and waits; a single
// writer takes every item waiting (up to a bound) and writes them
// together, then answers each caller with the batch's result. A caller is
// answered only once its item is durable, as if it had written alone, but
// the store sees one write per batch, not one per caller: with N agents
// cosigning a checkpoint, the broker writes O(1) transactions per
// interval instead of N.
package groupcommit

import (
	"context"
	"errors"
	"sync"
)

// ErrClosed reports that the committer has stopped.
var ErrClosed = errors.New("group commit: closed")

// Committer batches items of type T for its write function.
type Committer[T any] struct {
	write    func(ctx context.Context, items []T) error
	maxBatch int

	reqs    chan req[T]
	done    chan struct{} // closed by Close
	stopped chan struct{} // closed once the writer has answered its last batch
	once    sync.Once
}

type req[T any] struct {
	item T
	errc chan error
}

// New starts a committer: write stores a batch of at most maxBatch items
// in one transaction. Close stops it.
func New[T any](write func(ctx context.Context, items []T) error, maxBatch int) *Committer[T] {
	if maxBatch < 1 {
		maxBatch = 1
	}
	c := &Committer[T]{write: write, maxBatch: maxBatch, reqs: make(chan req[T], maxBatch), done: make(chan struct{}), stopped: make(chan struct{})}
	go c.run()
	return c
}

// Add writes item with whatever else is waiting and returns once the
// batch is written (or failed). If ctx ends before the item was taken, it
// is not written.
func (c *Committer[T]) Add(ctx context.Context, item T) error {
	r := req[T]{item: item, errc: make(chan error, 1)}
	select {
	case c.reqs <- r:
	case <-c.done:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	// Queued: its batch is answered, whatever ctx does meanwhile, so a
	// caller never believes lost an item that was written. Queued after
	// the writer stopped, it is never taken.
	select {
	case err := <-r.errc:
		return err
	case <-c.stopped:
		select {
		case err := <-r.errc:
			return err
		default:
			return ErrClosed
		}
	}
}

func (c *Committer[T]) run() {
	defer close(c.stopped)
	batch := make([]req[T], 0, c.maxBatch)
	items := make([]T, 0, c.maxBatch)
	for {
		select {
		case <-c.done:
			c.drain()
			return
		case r := <-c.reqs:
			batch = append(batch[:0], r)
		more:
			for len(batch) < c.maxBatch {
				select {
				case r := <-c.reqs:
					batch = append(batch, r)
				default:
					break more
				}
			}
			items = items[:0]
			for _, r := range batch {
				items = append(items, r.item)
			}
			err := c.write(context.Background(), items)
			for _, r := range batch {
				r.errc <- err
			}
		}
	}
}

// drain answers whatever is still queued once the committer stops.
func (c *Committer[T]) drain() {
	for {
		select {
		case r := <-c.reqs:
			r.errc <- ErrClosed
		default:
			return
		}
	}
}

// Close stops the committer after the batch in progress.
func (c *Committer[T]) Close() {
	c.once.Do(func() { close(c.done) })
	<-c.stopped
}

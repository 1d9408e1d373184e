package audit

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/mod/sumdb/note"
)

// LogConfig configures a [Log].
type LogConfig struct {
	// Storage keeps records, checkpoints and cosignatures. Required.
	Storage Storage
	// Signer signs checkpoints; its name is the log's origin. Required.
	Signer note.Signer
	// CheckpointInterval is how often a checkpoint is signed while events
	// arrive; default 1s.
	CheckpointInterval time.Duration
	// MaxBatch bounds how many events share one commit; default 1024.
	MaxBatch int
	// Now is the log's clock; nil means time.Now.
	Now func() time.Time
	// Logger receives the log's own logs; nil discards them.
	Logger *slog.Logger
	// Registerer, if set, receives the log's Prometheus metrics.
	Registerer prometheus.Registerer
	// Verifier, if set, verifies the log's own checkpoint notes: start-up
	// and the background verifier then check the stored events against
	// the roots the notes sign, not against the stored root column,
	// which nothing signs.
	Verifier note.Verifier
	// StartupVerify is how many of the newest events OpenLog checks
	// against their data (leaf hash and searched columns, see
	// [CheckRecord]); events not yet under a checkpoint are always
	// checked. Older events are checked by the background verifier.
	// Default 100,000 (about a second: reading an event in full costs
	// some 10 µs, against 2 µs for its stored leaf hash); negative checks
	// only those not under a checkpoint.
	StartupVerify int
	// VerifyInterval is how often the background verifier checks the
	// next VerifyStep events, pass after pass over the whole log; default
	// 1s; negative turns it off.
	VerifyInterval time.Duration
	// VerifyStep bounds the events one background step reads; default
	// 5000.
	VerifyStep int
}

// Log is the broker's audit log: durable, group-committed appends to a
// Storage, an in-memory Merkle tree over them, and a signed checkpoint at
// least every CheckpointInterval while events arrive.
//
// Several Logs may write to one Storage (brokers sharing one PostgreSQL
// database, signing with one shared key): the storage numbers appended
// records itself, under its lock ([Storage.AppendRecordsNext]); the Log
// then reads the leaf hashes the others appended before its records. A Log
// adopts a checkpoint another writer signed when its own tree, caught
// up, has the same root.
type Log struct {
	cfg  LogConfig
	log  *slog.Logger
	now  func() time.Time
	reqs chan *appendReq
	done chan struct{}

	// Owned by the writer goroutine (Run) once it starts.
	tree *Tree
	last StoredCheckpoint

	lastSize atomic.Uint64 // last.Size, for readers
	// head is last's size and root, for the proofs' check: the tree
	// the log signed, or checked against the stored events at start.
	head atomic.Pointer[treeHead]
	// latest is last, for readers: the checkpoint the log serves, whose
	// size head covers (published after head, see setLast).
	latest atomic.Pointer[StoredCheckpoint]

	m *metrics

	tamperMu sync.Mutex
	tampered map[TamperError]struct{} // problems reported, see reportTamper
}

type appendReq struct {
	recs       []Record // Index and LeafHash unset until committed
	idempotent bool     // skip records whose ID is already stored
	checkpoint bool     // a request to checkpoint now (recs empty)
	stored     int
	errc       chan error
}

// ErrClosed reports that the log's writer has stopped.
var ErrClosed = errors.New("audit log is closed")

// OpenLog loads the stored tree and checks it against the latest stored
// checkpoint: a store whose records were changed since the log signed it
// does not open. The newest [LogConfig.StartupVerify] events and every
// event after the latest checkpoint are read in full: a record whose data
// or searched columns do not match its leaf hash does not open either
// (a [*TamperError]). Call Run to start writing.
func OpenLog(ctx context.Context, cfg LogConfig) (*Log, error) {
	if cfg.Storage == nil || cfg.Signer == nil {
		return nil, errors.New("audit log: storage and signer are required")
	}
	if cfg.CheckpointInterval <= 0 {
		cfg.CheckpointInterval = time.Second
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 1024
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.StartupVerify == 0 {
		cfg.StartupVerify = 100_000
	}
	if cfg.VerifyInterval == 0 {
		cfg.VerifyInterval = time.Second
	}
	if cfg.VerifyStep <= 0 {
		cfg.VerifyStep = 5000
	}
	l := &Log{
		cfg:  cfg,
		log:  cfg.Logger.With("component", "audit"),
		now:  cfg.Now,
		reqs: make(chan *appendReq, 4*cfg.MaxBatch),
		done: make(chan struct{}),
		tree: NewTree(),
		m:    newMetrics(cfg.Registerer),

		tampered: make(map[TamperError]struct{}),
	}
	size, err := cfg.Storage.AuditSize(ctx)
	if err != nil {
		return nil, fmt.Errorf("open audit log: %w", err)
	}
	last, haveLast, err := cfg.Storage.LatestCheckpoint(ctx)
	if err != nil {
		return nil, fmt.Errorf("open audit log: %w", err)
	}
	if err := l.load(ctx, size, last, haveLast); err != nil {
		return nil, fmt.Errorf("open audit log: %w", err)
	}
	l.m.treeSize.Set(float64(size))
	if haveLast {
		l.setLast(last)
	}
	return l, nil
}

// setLast makes c, stored, the log's latest checkpoint: the one it
// serves ([Log.Latest]) and checks its proofs against. head is published
// before latest and lastSize, so that a reader that sees the new
// checkpoint can always be given proofs against it.
func (l *Log) setLast(c StoredCheckpoint) {
	l.last = c
	l.head.Store(&treeHead{size: c.Size, root: c.Root})
	l.lastSize.Store(c.Size)
	l.latest.Store(&c)
	l.m.ckptSize.Set(float64(c.Size))
	l.m.setCheckpointTime(c.Time)
}

// load rebuilds the tree of the size stored events and checks it against
// the latest checkpoint, last. Events before verifyFrom are taken at
// their stored leaf hashes, which the checkpoint's root covers; those
// from it on are read in full and checked with [CheckRecord].
func (l *Log) load(ctx context.Context, size uint64, last StoredCheckpoint, haveLast bool) error {
	if haveLast && last.Size > size {
		return fmt.Errorf("signed checkpoint %d covers more events than the store holds (%d): events were deleted", last.Size, size)
	}
	start := time.Now()
	var verifyFrom uint64
	if n := uint64(max(l.cfg.StartupVerify, 0)); size > n {
		verifyFrom = size - n
	}
	if haveLast {
		verifyFrom = min(verifyFrom, last.Size)
	} else {
		verifyFrom = 0
	}
	checkRoot := func() error {
		if haveLast && l.tree.Size() == last.Size {
			if err := l.checkRoot(last, l.tree.Root()); err != nil {
				return fmt.Errorf("%w: refusing to start on a modified store", err)
			}
		}
		return nil
	}
	const chunk = 100_000
	for from := uint64(0); from < verifyFrom; from += chunk {
		hs, err := l.cfg.Storage.LeafHashes(ctx, from, min(from+chunk, verifyFrom))
		if err != nil {
			return err
		}
		for _, h := range hs {
			l.tree.Append(h)
			if err := checkRoot(); err != nil {
				return err
			}
		}
	}
	const page = 10_000
	for from := verifyFrom; from < size; from += page {
		recs, err := l.cfg.Storage.Records(ctx, Filter{FromIndex: from, ToIndex: min(from+page, size)})
		if err != nil {
			return err
		}
		for _, r := range recs {
			if want := l.tree.Size(); r.Index != want {
				return fmt.Errorf("%w: refusing to start on a modified store", &TamperError{Index: want, What: "the event is missing from the store"})
			}
			if err := CheckRecord(r); err != nil {
				return fmt.Errorf("%w: refusing to start on a modified store", err)
			}
			l.tree.Append(r.LeafHash)
			if err := checkRoot(); err != nil {
				return err
			}
		}
	}
	if l.tree.Size() != size {
		return fmt.Errorf("%w: refusing to start on a modified store", &TamperError{Index: l.tree.Size(), What: "the event is missing from the store"})
	}
	l.log.Debug("audit log verified", "events", size, "checked_in_full", size-verifyFrom,
		"checkpoint", last.Size, "duration", time.Since(start).Round(time.Millisecond))
	return nil
}

// Origin is the log's name, the first line of its checkpoints.
func (l *Log) Origin() string { return l.cfg.Signer.Name() }

// Run writes until ctx ends: it group-commits appends and signs
// checkpoints. On the way out it signs a last checkpoint so that every
// stored event is covered.
func (l *Log) Run(ctx context.Context) error {
	// The verifier may be waiting for the writer: done is closed first,
	// then the verifier is waited for.
	var verifier sync.WaitGroup
	defer verifier.Wait()
	defer close(l.done)
	if l.cfg.VerifyInterval > 0 {
		verifier.Go(func() { l.runVerifier(ctx) })
	}
	tick := time.NewTicker(l.cfg.CheckpointInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			l.drain()
			l.checkpoint(context.Background())
			return nil
		case r := <-l.reqs:
			batch := []*appendReq{r}
			n := len(r.recs)
		more:
			for n < l.cfg.MaxBatch {
				select {
				case r := <-l.reqs:
					batch = append(batch, r)
					n += len(r.recs)
				default:
					break more
				}
			}
			l.commit(batch)
		case <-tick.C:
			if err := l.checkpoint(ctx); err != nil && ctx.Err() == nil {
				l.log.Error("audit checkpoint failed", "err", err)
			}
		}
	}
}

// drain fails every queued request once the writer stops.
func (l *Log) drain() {
	for {
		select {
		case r := <-l.reqs:
			r.errc <- ErrClosed
		default:
			return
		}
	}
}

func (l *Log) commit(batch []*appendReq) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var recs []Record
	seen := map[string]bool{}
	var checkpoints []*appendReq
	for _, r := range batch {
		if r.checkpoint {
			checkpoints = append(checkpoints, r)
			continue
		}
		var existing map[string]bool
		if r.idempotent {
			ids := make([]string, len(r.recs))
			for i, rec := range r.recs {
				ids[i] = rec.ID
			}
			var err error
			if existing, err = l.cfg.Storage.ExistingIDs(ctx, ids); err != nil {
				r.errc <- fmt.Errorf("audit: %w", err)
				r.recs = nil
				r.errc = nil
				continue
			}
		}
		for _, rec := range r.recs {
			if existing[rec.ID] || seen[rec.ID] {
				continue
			}
			seen[rec.ID] = true
			recs = append(recs, rec)
			r.stored++
		}
	}
	var err error
	if len(recs) > 0 {
		start := time.Now()
		// The store numbers them after whatever is stored; the events
		// other writers stored before them join the tree first.
		var first uint64
		if first, err = l.cfg.Storage.AppendRecordsNext(ctx, recs); err == nil {
			err = l.catchUpTo(ctx, first)
		}
		l.m.commitSeconds.Observe(time.Since(start).Seconds())
		if err == nil {
			for _, rec := range recs {
				l.tree.Append(rec.LeafHash)
			}
			l.m.appends.Add(float64(len(recs)))
			l.m.commits.Inc()
			l.m.treeSize.Set(float64(l.tree.Size()))
		} else {
			l.m.commitErrors.Inc()
			l.log.Error("audit append failed", "events", len(recs), "err", err)
			err = fmt.Errorf("audit: %w", err)
		}
	}
	for _, r := range batch {
		if r.errc != nil && !r.checkpoint {
			r.errc <- err
		}
	}
	for _, r := range checkpoints {
		r.errc <- l.checkpoint(ctx)
	}
}

// catchUp appends to the tree the leaf hashes of the events other
// writers stored after it. Writer goroutine only.
func (l *Log) catchUp(ctx context.Context) error {
	size, err := l.cfg.Storage.AuditSize(ctx)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	return l.catchUpTo(ctx, size)
}

// catchUpTo appends to the tree the leaf hashes of the stored events
// before index size that it lacks. Writer goroutine only.
func (l *Log) catchUpTo(ctx context.Context, size uint64) error {
	mine := l.tree.Size()
	if size < mine {
		return fmt.Errorf("audit: the store holds %d events, fewer than the %d this log has seen: events were deleted", size, mine)
	}
	const chunk = 10_000
	for from := mine; from < size; from += chunk {
		hs, err := l.cfg.Storage.LeafHashes(ctx, from, min(from+chunk, size))
		if err != nil {
			return fmt.Errorf("audit: %w", err)
		}
		for _, h := range hs {
			l.tree.Append(h)
		}
	}
	if l.tree.Size() != size {
		return fmt.Errorf("audit: the store gave %d leaf hashes up to %d, want %d", l.tree.Size()-mine, size, size-mine)
	}
	if size > mine {
		l.m.treeSize.Set(float64(size))
		l.log.Debug("took in events another writer appended", "from", mine, "to", size)
	}
	return nil
}

// adoptLatest takes the latest stored checkpoint as the log's own when
// another writer signed it and it covers the log's whole tree: its note
// must verify (with LogConfig.Verifier, when set) and its root must be
// the root of the tree the log has, caught up, of that size. It reports
// whether it adopted one. Writer goroutine only.
func (l *Log) adoptLatest(ctx context.Context) (bool, error) {
	latest, ok, err := l.cfg.Storage.LatestCheckpoint(ctx)
	if err != nil || !ok || latest.Size <= l.last.Size || latest.Size != l.tree.Size() {
		return false, err
	}
	root := latest.Root
	if l.cfg.Verifier != nil {
		c, err := OpenCheckpoint(latest.Note, l.cfg.Verifier)
		if err != nil {
			return false, fmt.Errorf("checkpoint %d another writer stored: %w", latest.Size, err)
		}
		root = c.Root
	}
	if root != l.tree.Root() {
		err := &TamperError{Index: latest.Size, Checkpoint: true, What: "a checkpoint another writer stored signs another root than the stored events make"}
		l.reportTamper(ctx, err, "checkpoint")
		return false, err
	}
	l.setLast(latest)
	return true, nil
}

// checkpoint signs and stores a checkpoint if events arrived since the
// last one, first taking in what other writers appended and signed.
// Another writer may store a checkpoint between the two: then it tries
// again, a few times.
func (l *Log) checkpoint(ctx context.Context) error {
	var err error
	for range 4 {
		if err = l.catchUp(ctx); err != nil {
			return err
		}
		if adopted, aerr := l.adoptLatest(ctx); adopted || aerr != nil {
			return aerr
		}
		size := l.tree.Size()
		if size == 0 || size == l.last.Size {
			return nil
		}
		c := Checkpoint{Origin: l.Origin(), Size: size, Root: l.tree.Root(), Time: l.now().UTC()}
		text, serr := SignCheckpoint(c, l.cfg.Signer)
		if serr != nil {
			return fmt.Errorf("sign checkpoint: %w", serr)
		}
		sc := StoredCheckpoint{Size: c.Size, Root: c.Root, Time: c.Time, Note: text}
		if err = l.cfg.Storage.AddCheckpoint(ctx, sc); err != nil {
			err = fmt.Errorf("store checkpoint: %w", err)
			continue
		}
		// Stored first, then served: a checkpoint is handed out only
		// once durable (a witness's cosignature of it is checked
		// against the store), and only once the log proves against it.
		l.setLast(sc)
		return nil
	}
	return err
}

func (l *Log) send(ctx context.Context, r *appendReq) error {
	r.errc = make(chan error, 1)
	select {
	case l.reqs <- r:
	case <-l.done:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	// Once queued, the request is answered: wait for it even if ctx ends,
	// so that a caller never believes an event was lost that was stored.
	select {
	case err := <-r.errc:
		return err
	case <-l.done:
		select {
		case err := <-r.errc:
			return err
		default:
			return ErrClosed
		}
	}
}

// record turns an event into a record: canonical bytes and leaf hash are
// computed here, in the caller's goroutine, so the writer only writes.
func record(e Event) (Record, error) {
	if err := e.Validate(); err != nil {
		return Record{}, fmt.Errorf("audit: %w", err)
	}
	data, err := e.Marshal()
	if err != nil {
		return Record{}, fmt.Errorf("audit: %w", err)
	}
	return Record{
		ID: e.ID, Time: e.Time, Type: e.Type, Subject: e.Actor.Subject, Deployment: e.Deployment,
		RequestID: e.RequestID, GrantID: e.GrantID, ActorTenant: recordActorTenant(e.Deployment, e.Actor.Tenant),
		Data: data, LeafHash: LeafHash(data),
	}, nil
}

// recordActorTenant is a record's ActorTenant: the actor's tenant of an
// event about no deployment, else empty.
func recordActorTenant(deployment, actorTenant string) string {
	if deployment != "" {
		return ""
	}
	return actorTenant
}

// Stamp fills in an event's version, a new UUIDv7 ID and the time, if
// they are unset.
func Stamp(e *Event, now time.Time) error {
	e.Version = SchemaVersion
	if e.ID == "" {
		id, err := uuid.NewV7()
		if err != nil {
			return fmt.Errorf("audit: %w", err)
		}
		e.ID = id.String()
	}
	if e.Time.IsZero() {
		e.Time = now.UTC()
	}
	return nil
}

// Record stamps e and returns once it is durably stored.
func (l *Log) Record(ctx context.Context, e Event) error {
	if err := Stamp(&e, l.now()); err != nil {
		return err
	}
	rec, err := record(e)
	if err != nil {
		return err
	}
	return l.send(ctx, &appendReq{recs: []Record{rec}})
}

var _ Recorder = (*Log)(nil)

// RecordAll stamps es and stores them in one commit, in order: all or
// none. It returns once they are durably stored.
func (l *Log) RecordAll(ctx context.Context, es ...Event) error {
	recs := make([]Record, 0, len(es))
	for _, e := range es {
		if err := Stamp(&e, l.now()); err != nil {
			return err
		}
		rec, err := record(e)
		if err != nil {
			return err
		}
		recs = append(recs, rec)
	}
	return l.send(ctx, &appendReq{recs: recs})
}

// RecordDelivered stores events recorded elsewhere (an agent's spool),
// keeping their IDs and times, and skipping any whose ID is already
// stored, so a redelivery stores nothing twice. It returns how many were
// new.
func (l *Log) RecordDelivered(ctx context.Context, es []Event) (int, error) {
	recs := make([]Record, 0, len(es))
	for _, e := range es {
		rec, err := record(e)
		if err != nil {
			return 0, err
		}
		recs = append(recs, rec)
	}
	r := &appendReq{recs: recs, idempotent: true}
	if err := l.send(ctx, r); err != nil {
		return 0, err
	}
	return r.stored, nil
}

// Checkpoint signs a checkpoint now, covering every event stored so far
// (or adopts the one another writer signed over them), and returns the
// log's latest checkpoint, as [Log.Latest] does.
func (l *Log) Checkpoint(ctx context.Context) (StoredCheckpoint, bool, error) {
	if err := l.send(ctx, &appendReq{checkpoint: true}); err != nil {
		return StoredCheckpoint{}, false, err
	}
	return l.Latest(ctx)
}

// LatestSize is the size of the latest signed checkpoint, without a trip
// to the store.
func (l *Log) LatestSize() uint64 { return l.lastSize.Load() }

// Latest returns the log's latest checkpoint: the one it signed, adopted
// or opened with last, stored, and the one its proofs are checked
// against, so that a proof up to its size can always be made. The store
// may meanwhile hold a newer one: being stored, before the log takes it
// as its own, or signed by another writer sharing the store, which the
// log adopts at its next checkpoint. It does not read the store; the
// error is always nil.
func (l *Log) Latest(context.Context) (StoredCheckpoint, bool, error) {
	c := l.latest.Load()
	if c == nil {
		return StoredCheckpoint{}, false, nil
	}
	return *c, true, nil
}

// ErrNoCheckpoint reports a log that has signed no checkpoint yet.
var ErrNoCheckpoint = errors.New("the audit log has no checkpoint yet")

// ErrBeyondCheckpoint reports a witness that says it cosigned a
// checkpoint larger than any stored.
var ErrBeyondCheckpoint = errors.New("beyond the latest checkpoint")

// WitnessCheckpoint returns the checkpoint to hand a witness that last
// cosigned the checkpoint of size since (0 for none) and the proof that
// it is consistent with that one: the log's latest ([Log.Latest]), which
// the proof is checked against. When since is beyond it, because another
// writer sharing the store signed a larger checkpoint and the witness
// cosigned that one through it, the log first takes in the events and
// checkpoints the others stored. When no stored checkpoint is as large
// as since, it returns an error wrapping [ErrBeyondCheckpoint] (or
// [ErrNoCheckpoint], if there is none at all): a witness told so refuses
// the log for good, so it is said only when the store holds no such
// checkpoint.
func (l *Log) WitnessCheckpoint(ctx context.Context, since uint64) (StoredCheckpoint, [][32]byte, error) {
	c, ok, _ := l.Latest(ctx)
	if since > c.Size || !ok {
		stored, sok, err := l.cfg.Storage.LatestCheckpoint(ctx)
		if err != nil {
			return StoredCheckpoint{}, nil, fmt.Errorf("witness checkpoint: %w", err)
		}
		if sok && stored.Size >= since && (!ok || stored.Size > c.Size) {
			// Another writer's (or one being stored): catch up.
			if c, ok, err = l.Checkpoint(ctx); err != nil {
				return StoredCheckpoint{}, nil, fmt.Errorf("witness checkpoint: take in the store's checkpoint %d: %w", stored.Size, err)
			}
			if !ok || since > c.Size {
				return StoredCheckpoint{}, nil, fmt.Errorf("witness checkpoint: the store holds checkpoint %d, but the log has only %d after taking it in", stored.Size, c.Size)
			}
		}
	}
	switch {
	case !ok:
		return StoredCheckpoint{}, nil, ErrNoCheckpoint
	case since > c.Size:
		return StoredCheckpoint{}, nil, fmt.Errorf("size %d is %w, %d", since, ErrBeyondCheckpoint, c.Size)
	case since == 0 || since == c.Size:
		return c, nil, nil
	}
	p, err := l.ConsistencyProof(ctx, since, c.Size)
	if err != nil {
		return StoredCheckpoint{}, nil, err
	}
	return c, p, nil
}

// InclusionProof proves that the record at index is in the tree of the
// given size, which must not exceed the latest checkpoint's. The proof is
// built from O(log n) stored node hashes and checked against the latest
// checkpoint before it is returned (see [NodeID]).
func (l *Log) InclusionProof(ctx context.Context, index, size uint64) ([][32]byte, error) {
	if index >= size {
		return nil, fmt.Errorf("inclusion proof: index %d is not below size %d", index, size)
	}
	return l.prove(ctx, proofRequest{inclusion: true, a: index, b: size})
}

// ConsistencyProof proves that the tree of size n extends the tree of
// size m; n must not exceed the latest checkpoint's size. Like
// [Log.InclusionProof], it reads O(log n) stored hashes and is checked
// before it is returned.
func (l *Log) ConsistencyProof(ctx context.Context, m, n uint64) ([][32]byte, error) {
	if m > n {
		return nil, fmt.Errorf("consistency proof: size %d is larger than %d", m, n)
	}
	if m == 0 || m == n {
		if n > l.lastSize.Load() {
			return nil, fmt.Errorf("consistency proof from size %d to %d: beyond the latest checkpoint (%d)", m, n, l.lastSize.Load())
		}
		return [][32]byte{}, nil
	}
	return l.prove(ctx, proofRequest{a: m, b: n})
}

// ExportOptions selects what to export.
type ExportOptions struct {
	Since, Until time.Time // by event time; zero means unbounded
}

// ErrNothingToExport reports that no checkpointed event matches.
var ErrNothingToExport = errors.New("no checkpointed events in that range")

// Export writes the events in range, the checkpoints that cover them and
// their cosignatures, in the export format, so that [Verify] can check
// them offline. The range ends at a checkpoint: events not yet covered by
// one are left for a later export. It is [Log.PrepareExport] followed by
// [LogExport.WriteTo].
func (l *Log) Export(ctx context.Context, w io.Writer, opts ExportOptions) (from, to uint64, err error) {
	x, err := l.PrepareExport(ctx, opts)
	if err != nil {
		return 0, 0, err
	}
	return x.from, x.to, x.WriteTo(ctx, w, nil)
}

// LogExport is an export ready to write: its range is chosen.
type LogExport struct {
	l        *Log
	from, to uint64
	prefix   [][32]byte
}

// exportPage is how many events an export reads at a time, with the
// checkpoints and cosignatures among them: its memory is bounded by a
// page, not by the log.
const exportPage = 1000

// PrepareExport signs a checkpoint over every stored event and chooses
// the export's range: errors, [ErrNothingToExport] among them, come here,
// before anything is written.
func (l *Log) PrepareExport(ctx context.Context, opts ExportOptions) (*LogExport, error) {
	st := l.cfg.Storage
	if _, _, err := l.Checkpoint(ctx); err != nil {
		return nil, err
	}
	var from uint64
	if !opts.Since.IsZero() {
		recs, err := st.Records(ctx, Filter{Since: opts.Since, Limit: 1})
		if err != nil {
			return nil, err
		}
		if len(recs) == 0 {
			return nil, ErrNothingToExport
		}
		from = recs[0].Index
	}
	latest, ok, err := st.LatestCheckpoint(ctx)
	if err != nil {
		return nil, err
	}
	if !ok || from >= latest.Size {
		return nil, ErrNothingToExport
	}
	end := latest.Size
	if !opts.Until.IsZero() {
		recs, err := st.Records(ctx, Filter{Since: opts.Until, Limit: 1})
		if err != nil {
			return nil, err
		}
		if len(recs) > 0 {
			end = recs[0].Index
		}
	}
	// The export ends at the first checkpoint at or after end (and after
	// from), so the events up to Until are all covered; looked for in
	// growing windows, not read all at once.
	var to uint64
	for lo, window := max(end, from+1), uint64(1024); to == 0 && lo <= latest.Size; window *= 4 {
		cps, err := st.Checkpoints(ctx, lo, min(lo+window-1, latest.Size))
		if err != nil {
			return nil, err
		}
		if len(cps) > 0 {
			to = cps[0].Size
		}
		lo += window
	}
	if to == 0 {
		return nil, ErrNothingToExport
	}
	x := &LogExport{l: l, from: from, to: to}
	if from > 0 {
		if x.prefix, err = l.treePrefix(ctx, from); err != nil {
			return nil, err
		}
	}
	return x, nil
}

// treePrefix returns the compact range of the tree of the given size,
// below the latest checkpoint: read from the stored nodes and checked
// against the checkpoint, else rebuilt from the leaf hashes.
func (l *Log) treePrefix(ctx context.Context, size uint64) ([][32]byte, error) {
	hs, err := l.cfg.Storage.NodeHashes(ctx, PrefixNodes(size))
	if err == nil {
		t, terr := NewTreeFromPrefix(size, hs)
		head := l.head.Load()
		if terr == nil && head != nil && size < head.size {
			p, perr := l.ConsistencyProof(ctx, size, head.size)
			if perr == nil && VerifyConsistency(size, head.size, t.Root(), head.root, p) == nil {
				return hs, nil
			}
		}
		l.reportTamper(ctx, &TamperError{Index: size, Checkpoint: true, What: "the stored hashes of the tree's nodes before an export's first event do not match the signed tree"}, "export")
	} else if !errors.Is(err, ErrNodesMissing) {
		return nil, err
	}
	t := NewTree()
	const chunk = 1 << 16
	for next := uint64(0); next < size; next += chunk {
		hs, err := l.cfg.Storage.LeafHashes(ctx, next, min(next+chunk, size))
		if err != nil {
			return nil, err
		}
		for _, h := range hs {
			t.Append(h)
		}
	}
	if t.Size() != size {
		return nil, fmt.Errorf("export: the store has %d leaf hashes before event %d", t.Size(), size)
	}
	return t.Prefix(), nil
}

// Range is the export's events, [from, to).
func (x *LogExport) Range() (from, to uint64) { return x.from, x.to }

// WriteTo streams the export to w, [exportPage] events at a time with
// the checkpoints and cosignatures among them. progress, if not nil, is
// called after each page (to extend a write deadline, say). A failure
// part way leaves w without the end line, which [Verify] reports as
// truncated.
func (x *LogExport) WriteTo(ctx context.Context, w io.Writer, progress func()) error {
	st := x.l.cfg.Storage
	ew, err := NewExportWriter(w, x.l.Origin(), x.from, x.prefix)
	if err != nil {
		return err
	}
	for next := x.from; next < x.to; {
		pageEnd := min(next+exportPage, x.to)
		recs, err := st.Records(ctx, Filter{FromIndex: next, ToIndex: pageEnd})
		if err != nil {
			return err
		}
		if len(recs) == 0 {
			return fmt.Errorf("export: events from %d are missing from the store", next)
		}
		cps, err := st.Checkpoints(ctx, next+1, pageEnd)
		if err != nil {
			return err
		}
		cosigs, err := st.Cosignatures(ctx, next+1, pageEnd)
		if err != nil {
			return err
		}
		ci, si := 0, 0
		for _, r := range recs {
			if err := ew.WriteEvent(r.Index, r.Data); err != nil {
				return err
			}
			for ci < len(cps) && cps[ci].Size <= r.Index {
				ci++
			}
			if ci < len(cps) && cps[ci].Size == r.Index+1 {
				c := cps[ci]
				if err := ew.WriteCheckpoint(c.Size, c.Note); err != nil {
					return err
				}
				for si < len(cosigs) && cosigs[si].Size < c.Size {
					si++
				}
				for si < len(cosigs) && cosigs[si].Size == c.Size {
					if err := ew.WriteCosignature(c.Size, cosigs[si].Note); err != nil {
						return err
					}
					si++
				}
				ci++
			}
			next = r.Index + 1
		}
		if progress != nil {
			progress()
		}
	}
	return ew.Close()
}

type metrics struct {
	appends, commits, commitErrors prometheus.Counter
	commitSeconds                  prometheus.Histogram
	treeSize, ckptSize, ckptTime   prometheus.Gauge
	verifyFailures, verifyPasses   prometheus.Counter
	verifyPassTime                 prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		appends:       prometheus.NewCounter(prometheus.CounterOpts{Name: "tether_audit_appends_total", Help: "Audit events durably appended."}),
		commits:       prometheus.NewCounter(prometheus.CounterOpts{Name: "tether_audit_commits_total", Help: "Group commits (one fsync each)."}),
		commitErrors:  prometheus.NewCounter(prometheus.CounterOpts{Name: "tether_audit_commit_errors_total", Help: "Group commits that failed; their events were refused."}),
		commitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "tether_audit_commit_seconds", Help: "Latency of one group commit, including its fsync.", Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16)}),
		treeSize:      prometheus.NewGauge(prometheus.GaugeOpts{Name: "tether_audit_tree_size", Help: "Events in the audit log's Merkle tree."}),
		ckptSize:      prometheus.NewGauge(prometheus.GaugeOpts{Name: "tether_audit_checkpoint_size", Help: "Tree size of the latest signed checkpoint."}),
		ckptTime:      prometheus.NewGauge(prometheus.GaugeOpts{Name: "tether_audit_checkpoint_timestamp_seconds", Help: "Unix time of the latest signed checkpoint; its age is time() minus this."}),

		verifyFailures: prometheus.NewCounter(prometheus.CounterOpts{Name: "tether_audit_verify_failures_total", Help: "Stored audit events or checkpoints found not to match what the log signed (each problem counted once per process); anything above 0 means someone changed the store."}),
		verifyPasses:   prometheus.NewCounter(prometheus.CounterOpts{Name: "tether_audit_verify_passes_total", Help: "Completed background re-verifications of the whole audit log."}),
		verifyPassTime: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tether_audit_verify_pass_timestamp_seconds", Help: "Unix time the last background re-verification of the whole audit log ended."}),
	}
	if reg != nil {
		reg.MustRegister(m.appends, m.commits, m.commitErrors, m.commitSeconds, m.treeSize, m.ckptSize, m.ckptTime,
			m.verifyFailures, m.verifyPasses, m.verifyPassTime)
	}
	return m
}

func (m *metrics) setCheckpointTime(t time.Time) {
	m.ckptTime.Set(float64(t.UnixNano()) / 1e9)
}

// OriginFor names the log of a broker with the given public key: stable
// for as long as the key is.
func OriginFor(pub []byte) string {
	h := sha256.Sum256(pub)
	return fmt.Sprintf("tether-audit/%x", h[:8])
}

package sqlitestore

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"strings"
	"unicode"

	"modernc.org/sqlite"
)

// SQLite lets one connection write at a time. A connection that finds the
// write lock taken waits in SQLite's busy handler, which polls: it sleeps
// 1, 2, 5, … up to 100 ms between tries, so that under load writers wait
// far longer than the writes take, and the one that gets the lock next is
// whichever happens to wake at the right moment. The store's connections
// therefore take turns in Go first: every transaction, and every statement
// outside one that may write, holds the store's write lock (a channel of
// one) from before SQLite's BEGIN IMMEDIATE until its COMMIT or ROLLBACK,
// and writers queue on the channel, in order, woken the moment the lock is
// free. Reads outside a transaction take no lock: with WAL they go on while
// one connection writes. SQLite's own locking and busy handler stay as they
// were, for other processes opening the same file.
//
// No store method runs a second write while it holds the lock (a
// transaction's statements all run on the transaction): a caller that did
// would wait for itself.

// writeLock serialises one database's writers.
type writeLock chan struct{}

func (w writeLock) lock(ctx context.Context) error {
	select {
	case w <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for the store's write lock: %w", ctx.Err())
	}
}

func (w writeLock) unlock() { <-w }

// connector opens the driver's connections, each wrapped in a [conn]
// that takes the write lock.
type connector struct {
	driver.Connector
	w writeLock
}

func newConnector(dsn string) (*connector, error) {
	c, err := sqlite.NewConnector(dsn)
	if err != nil {
		return nil, err
	}
	return &connector{Connector: c, w: make(writeLock, 1)}, nil
}

func (c *connector) Connect(ctx context.Context) (driver.Conn, error) {
	dc, err := c.Connector.Connect(ctx)
	if err != nil {
		return nil, err
	}
	ic, ok := dc.(innerConn)
	if !ok {
		dc.Close()
		return nil, fmt.Errorf("the sqlite driver's connection %T lacks the context methods the store needs", dc)
	}
	return &conn{c: ic, w: c.w}, nil
}

// innerConn is what the store needs of the driver's connections, every
// one of which has it (see [sqlite.NewConnector]).
type innerConn interface {
	driver.Conn
	driver.ConnBeginTx
	driver.ConnPrepareContext
	driver.ExecerContext
	driver.QueryerContext
	driver.Pinger
	driver.SessionResetter
	driver.Validator
}

// conn is a driver connection whose writes hold the store's write lock.
// database/sql uses a connection from one goroutine at a time, so inTx
// needs no lock of its own.
type conn struct {
	c    innerConn
	w    writeLock
	inTx bool // a transaction holds the write lock
}

var _ innerConn = (*conn)(nil)

// Unwrap returns the driver's connection, for [sqlite.Limit] and the like.
func (c *conn) Unwrap() driver.Conn { return c.c }

func (c *conn) Close() error { return c.c.Close() }

func (c *conn) Ping(ctx context.Context) error { return c.c.Ping(ctx) }

func (c *conn) ResetSession(ctx context.Context) error { return c.c.ResetSession(ctx) }

func (c *conn) IsValid() bool { return c.c.IsValid() }

func (c *conn) Begin() (driver.Tx, error) {
	return c.BeginTx(context.Background(), driver.TxOptions{})
}

// BeginTx takes the write lock, then begins: with _txlock=immediate,
// SQLite's write lock is taken at BEGIN too, so the transaction never
// waits for it, nor fails to upgrade a read to a write.
func (c *conn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	if err := c.w.lock(ctx); err != nil {
		return nil, err
	}
	t, err := c.c.BeginTx(ctx, opts)
	if err != nil {
		c.w.unlock()
		return nil, err
	}
	c.inTx = true
	return &tx{t: t, c: c}, nil
}

func (c *conn) Prepare(query string) (driver.Stmt, error) {
	return c.PrepareContext(context.Background(), query)
}

func (c *conn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	s, err := c.c.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	return &stmt{s: s, c: c, write: mayWrite(query)}, nil
}

func (c *conn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	if c.inTx {
		return c.c.ExecContext(ctx, query, args)
	}
	if err := c.w.lock(ctx); err != nil {
		return nil, err
	}
	defer c.w.unlock()
	return c.c.ExecContext(ctx, query, args)
}

// QueryContext runs a query; one that may write (DELETE … RETURNING,
// say) outside a transaction holds the write lock until its rows are
// closed, when SQLite ends its statement's implicit transaction.
func (c *conn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	if c.inTx || !mayWrite(query) {
		return c.c.QueryContext(ctx, query, args)
	}
	if err := c.w.lock(ctx); err != nil {
		return nil, err
	}
	r, err := c.c.QueryContext(ctx, query, args)
	if err != nil {
		c.w.unlock()
		return nil, err
	}
	return &rows{Rows: r, w: c.w}, nil
}

// tx releases the write lock when it ends.
type tx struct {
	t    driver.Tx
	c    *conn
	done bool
}

func (t *tx) Commit() error {
	if t.done {
		return t.t.Commit() // the driver says what is wrong
	}
	err := t.t.Commit()
	if err != nil {
		// A COMMIT that failed may leave the transaction open, and
		// SQLite's write lock with it: roll back before letting the
		// next writer in. The rollback's own error says no more.
		_ = t.t.Rollback()
	}
	t.end()
	return err
}

func (t *tx) Rollback() error {
	if t.done {
		return t.t.Rollback()
	}
	err := t.t.Rollback()
	t.end()
	return err
}

func (t *tx) end() {
	t.done = true
	t.c.inTx = false
	t.c.w.unlock()
}

// stmt is a prepared statement whose executions outside a transaction
// take the write lock if it may write.
type stmt struct {
	s     driver.Stmt
	c     *conn
	write bool
}

var (
	_ driver.StmtExecContext  = (*stmt)(nil)
	_ driver.StmtQueryContext = (*stmt)(nil)
)

func (s *stmt) Close() error  { return s.s.Close() }
func (s *stmt) NumInput() int { return s.s.NumInput() }

func (s *stmt) Exec(args []driver.Value) (driver.Result, error) {
	return s.ExecContext(context.Background(), namedValues(args))
}

func (s *stmt) Query(args []driver.Value) (driver.Rows, error) {
	return s.QueryContext(context.Background(), namedValues(args))
}

func (s *stmt) ExecContext(ctx context.Context, args []driver.NamedValue) (driver.Result, error) {
	ec, ok := s.s.(driver.StmtExecContext)
	if !ok {
		return nil, errors.New("the sqlite driver's statement lacks ExecContext")
	}
	if s.c.inTx {
		return ec.ExecContext(ctx, args)
	}
	if err := s.c.w.lock(ctx); err != nil {
		return nil, err
	}
	defer s.c.w.unlock()
	return ec.ExecContext(ctx, args)
}

func (s *stmt) QueryContext(ctx context.Context, args []driver.NamedValue) (driver.Rows, error) {
	qc, ok := s.s.(driver.StmtQueryContext)
	if !ok {
		return nil, errors.New("the sqlite driver's statement lacks QueryContext")
	}
	if s.c.inTx || !s.write {
		return qc.QueryContext(ctx, args)
	}
	if err := s.c.w.lock(ctx); err != nil {
		return nil, err
	}
	r, err := qc.QueryContext(ctx, args)
	if err != nil {
		s.c.w.unlock()
		return nil, err
	}
	return &rows{Rows: r, w: s.c.w}, nil
}

func namedValues(args []driver.Value) []driver.NamedValue {
	nv := make([]driver.NamedValue, len(args))
	for i, v := range args {
		nv[i] = driver.NamedValue{Ordinal: i + 1, Value: v}
	}
	return nv
}

// rows releases the write lock when closed.
type rows struct {
	driver.Rows
	w      writeLock
	closed bool
}

func (r *rows) Close() error {
	err := r.Rows.Close()
	if !r.closed {
		r.closed = true
		r.w.unlock()
	}
	return err
}

// mayWrite reports whether query may write: anything but a SELECT (a
// WITH may end in a DELETE, a PRAGMA may set something). Leading blanks
// and comments are skipped.
func mayWrite(query string) bool {
	q := query
	for {
		q = strings.TrimLeftFunc(q, unicode.IsSpace)
		switch {
		case strings.HasPrefix(q, "--"):
			i := strings.IndexByte(q, '\n')
			if i < 0 {
				return true
			}
			q = q[i+1:]
		case strings.HasPrefix(q, "/*"):
			i := strings.Index(q, "*/")
			if i < 0 {
				return true
			}
			q = q[i+2:]
		default:
			const sel = "SELECT"
			if len(q) < len(sel) || !strings.EqualFold(q[:len(sel)], sel) {
				return true
			}
			// SELECT itself, not a word starting with it.
			return len(q) > len(sel) && isIdentChar(rune(q[len(sel)]))
		}
	}
}

func isIdentChar(r rune) bool {
	return r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r)
}

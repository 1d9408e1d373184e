package sqlitestore

import (
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"sync"
	"syscall"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// A full disk must not stop what protects the customer: a revocation, and
// its audit event, have to be written when nothing else can be. So the
// broker keeps space aside beside the store, in a file of no use but its
// size, and removes it when a revocation fails for want of space; the
// revocation is then tried again in the room it leaves. The reserve is
// made again once the volume has room for it and as much again, so that
// making it never fills a disk an operator has just freed.

// ReserveSize is the space a store keeps in reserve: room for a few
// thousand revocations and their audit events (one takes a few pages of
// the write-ahead log, a few kilobytes), so that a whole burst of them
// fits, with the heartbeats that follow on the heels of the first.
const ReserveSize = 8 << 20

// ReservePath is where the reserve of the store at path is kept.
func ReservePath(path string) string { return path + ".reserve" }

// Reserve is the space kept aside for the store at one path. It is safe
// for concurrent use.
type Reserve struct {
	path string
	size int64

	mu sync.Mutex // serialises Fill and Release
}

// NewReserve returns the reserve of size bytes for the store at path. It
// does not touch the disk: [Reserve.Fill] makes the file.
func NewReserve(path string, size int64) *Reserve {
	return &Reserve{path: ReservePath(path), size: size}
}

// Path is the reserve file's path.
func (r *Reserve) Path() string { return r.path }

// Size is the space the reserve keeps when it is whole.
func (r *Reserve) Size() int64 { return r.size }

// Held reports the space the reserve holds now: its size, or 0 once it is
// released or while it could not be made.
func (r *Reserve) Held() int64 {
	fi, err := os.Lstat(r.path)
	if err != nil || !fi.Mode().IsRegular() || fi.Size() != r.size {
		return 0
	}
	return r.size
}

// ErrNoRoom reports that the reserve was not made because its volume
// lacks room for it and as much again.
var ErrNoRoom = errors.New("not enough free space to set the store's reserve aside")

// Fill makes the reserve file unless it is whole already. It writes
// incompressible bytes and syncs them, so that the space is really taken
// (a file of zeros may take none on a compressing file system), and
// refuses with [ErrNoRoom] when the volume has less free than twice the
// reserve.
func (r *Reserve) Fill() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.Held() == r.size {
		return nil
	}
	if free, ok := freeSpace(r.path); ok && free < uint64(2*r.size) {
		return fmt.Errorf("%w: %d bytes free on the volume of %s, want %d", ErrNoRoom, free, r.path, 2*r.size)
	}
	tmp := r.path + ".tmp"
	if err := writeReserve(tmp, r.size); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("make the store's reserve %s: %w", r.path, err)
	}
	if err := os.Rename(tmp, r.path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("make the store's reserve %s: %w", r.path, err)
	}
	return nil
}

// writeReserve writes size incompressible bytes to a new file at path and
// syncs it.
func writeReserve(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	var seed [32]byte
	rng := rand.NewChaCha8(seed) // not a secret: only not compressible
	buf := make([]byte, 64<<10)
	for left := size; left > 0; {
		n := min(left, int64(len(buf)))
		rng.Read(buf[:n])
		if _, err := f.Write(buf[:n]); err != nil {
			f.Close()
			return err
		}
		left -= n
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// Release removes the reserve, giving its space back to the store, and
// returns how many bytes that freed (0 when it was not there).
func (r *Reserve) Release() (int64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fi, err := os.Lstat(r.path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("release the store's reserve: %w", err)
	}
	if err := os.Remove(r.path); err != nil {
		return 0, fmt.Errorf("release the store's reserve: %w", err)
	}
	return fi.Size(), nil
}

// IsFull reports whether err says the store's volume is out of space:
// SQLite's SQLITE_FULL ("database or disk is full"), or ENOSPC from the
// file system.
func IsFull(err error) bool {
	var se *sqlite.Error
	if errors.As(err, &se) && se.Code()&0xff == sqlite3.SQLITE_FULL {
		return true
	}
	return errors.Is(err, syscall.ENOSPC)
}

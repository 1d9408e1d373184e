package sqlitestore_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tetherhq/tether/internal/store"
	"github.com/tetherhq/tether/internal/store/sqlitestore"
	"github.com/tetherhq/tether/internal/testenv"
)

// TestReserve: the reserve is made only with room for it and as much
// again, takes its space for real, and once released gives a store that
// failed with "disk full" room to write again; IsFull recognises the
// store's error on a full volume.
func TestReserve(t *testing.T) {
	vol := testenv.Tmpfs(t, "12m")
	ctx := context.Background()
	path := filepath.Join(vol, "tether.db")
	s, err := sqlitestore.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	// 8 MiB does not fit twice in what is left of 12 MiB: refused.
	if err := sqlitestore.NewReserve(path, 8<<20).Fill(); !errors.Is(err, sqlitestore.ErrNoRoom) {
		t.Errorf("Fill of 8 MiB on a 12 MiB volume = %v, want ErrNoRoom", err)
	}
	r := sqlitestore.NewReserve(path, 2<<20)
	if err := r.Fill(); err != nil || r.Held() != 2<<20 {
		t.Fatalf("Fill of 2 MiB = %v, held %d", err, r.Held())
	}
	var st syscall.Statfs_t
	syscall.Statfs(vol, &st)
	before := st.Bavail

	// Fill the rest: the store's next write fails, and says the disk is full.
	ballast, err := os.Create(filepath.Join(vol, "ballast"))
	if err != nil {
		t.Fatal(err)
	}
	defer ballast.Close()
	buf := make([]byte, 64<<10)
	for _, n := range []int{len(buf), 1} {
		for {
			if _, err := ballast.Write(buf[:n]); err != nil {
				break
			}
		}
	}
	var werr error
	for i := 0; i < 1000 && werr == nil; i++ {
		// Writes may reuse the write-ahead log's old frames for a while.
		werr = createDeployment(ctx, s, i)
	}
	if !sqlitestore.IsFull(werr) {
		t.Fatalf("store write on a full volume = %v, want an error IsFull recognises", werr)
	}
	freed, err := r.Release()
	if err != nil || freed != 2<<20 || r.Held() != 0 {
		t.Fatalf("Release = %d %v, held %d; want 2 MiB freed", freed, err, r.Held())
	}
	syscall.Statfs(vol, &st)
	if got := st.Bavail * uint64(st.Bsize); got < 2<<20 || before == 0 {
		t.Errorf("free after Release = %d bytes, want the reserve's 2 MiB", got)
	}
	if err := createDeployment(ctx, s, 1000); err != nil {
		t.Errorf("store write after the reserve was released = %v, want it to fit", err)
	}
	if freed, err := r.Release(); err != nil || freed != 0 {
		t.Errorf("second Release = %d %v, want nothing freed", freed, err)
	}
	if sqlitestore.IsFull(errors.New("database or disk is full")) {
		t.Error("IsFull took a plain string for SQLite's error")
	}
}

func createDeployment(ctx context.Context, s store.Store, i int) error {
	now := time.Now()
	id := uuid.New()
	return s.CreateDeployment(ctx, store.Deployment{ID: id.String(), Tenant: "acme", Name: fmt.Sprintf("d%d", i), CreatedAt: now},
		store.PairingToken{Hash: id[:], DeploymentID: id.String(), CreatedAt: now, ExpiresAt: now.Add(time.Hour)})
}

package broker

import (
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tetherhq/tether/internal/store/sqlitestore"
)

// What the broker does when its store's disk is full. Revocation and
// expiry must go on working; see docs/architecture.md ("A full disk"):
//
//   - Expiry needs no write: the grant carries its expiry, and broker and
//     agent both refuse it after that; its grant.expired event and state
//     follow once the store takes writes.
//   - A revocation first tries the store. On a full disk the broker
//     releases the reserve kept beside an SQLite store
//     ([sqlitestore.Reserve]) and tries again: the revocation and its
//     audit event are written in the room it leaves. Without a reserve
//     (spent, or PostgreSQL) the revocation is held in memory by the
//     lifecycle ([access.Service.Unrecorded]), pushed to the agent all the
//     same, and the caller is told exactly what took effect and what did
//     not (revocation_unrecorded).
//   - The reserve's state is on /metrics (tether_store_reserve_bytes) and
//     in the broker's log; it is made again once the volume has room.

// storeReserve is the space kept beside an SQLite store for revocations;
// nil for PostgreSQL.
type storeReserve struct {
	r     *sqlitestore.Reserve
	held  prometheus.Gauge
	spent prometheus.Counter
	unrec prometheus.Gauge
	gone  atomic.Bool // the reserve was missing at the last look, and that was logged
}

// sqlitePath is the SQLite store's path for cfg, "" for PostgreSQL.
func sqlitePath(cfg Config) string {
	if cfg.StoreDriver == "postgres" {
		return ""
	}
	if cfg.StoreDSN != "" {
		return cfg.StoreDSN
	}
	return filepath.Join(cfg.DataDir, "tether.db")
}

// startReserve sets the store's reserve aside (SQLite only) and registers
// its metrics. A reserve that cannot be made (a disk already full) does
// not stop the broker: it is logged, and tried again by the lifecycle.
func (b *Broker) startReserve() {
	sr := &storeReserve{
		held:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "tether_store_reserve_bytes", Help: "Space kept beside the SQLite store for revocations on a full disk; 0 once spent (free space on the store's volume)."}),
		spent: prometheus.NewCounter(prometheus.CounterOpts{Name: "tether_store_reserve_released_total", Help: "Times the store's reserve was released because its disk was full."}),
		unrec: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tether_revocations_unrecorded", Help: "Revocations in force at the broker (and told to the agent) that the store could not record yet."}),
	}
	b.reg.MustRegister(sr.unrec)
	if path := sqlitePath(b.cfg); path != "" {
		// PostgreSQL's disk is not the broker's to reserve: no reserve
		// metrics there, so that none reads as spent.
		sr.r = sqlitestore.NewReserve(path, sqlitestore.ReserveSize)
		b.reg.MustRegister(sr.held, sr.spent)
	}
	b.reserve = sr
	b.refillReserve()
}

// refillReserve makes the reserve again if it is not whole and the volume
// has room, and updates its metrics.
func (b *Broker) refillReserve() {
	sr := b.reserve
	if sr == nil {
		return
	}
	sr.unrec.Set(float64(b.access.UnrecordedCount()))
	if sr.r == nil {
		return
	}
	if sr.r.Held() == sr.r.Size() {
		sr.held.Set(float64(sr.r.Size()))
		return
	}
	err := sr.r.Fill()
	switch {
	case err == nil:
		sr.held.Set(float64(sr.r.Size()))
		if sr.gone.Swap(false) {
			b.log.Info("the store's reserve for revocations is set aside again", "path", sr.r.Path(), "bytes", sr.r.Size())
		}
	case !sr.gone.Swap(true):
		sr.held.Set(0)
		if errors.Is(err, sqlitestore.ErrNoRoom) {
			b.log.Error("the store's disk is nearly full: no reserve is kept for revocations; free space on the store's volume", "path", sr.r.Path(), "err", err)
		} else {
			b.log.Error("could not set the store's reserve for revocations aside", "path", sr.r.Path(), "err", err)
		}
	}
}

// storeFailed is the lifecycle's [access.Hooks] StoreFailed: a revocation
// the store could not take. On a full disk the reserve is released, once,
// and the revocation is tried again.
func (b *Broker) storeFailed(err error) (retry bool, why string) {
	sr := b.reserve
	if !sqlitestore.IsFull(err) {
		return false, "the store failed (the broker's log has details): fix the store"
	}
	why = "the broker's disk is full and the reserve kept for revocations is spent: free space on the volume holding the store"
	if sr == nil || sr.r == nil {
		return false, why
	}
	freed, rerr := sr.r.Release()
	sr.held.Set(0)
	sr.gone.Store(true)
	if rerr != nil {
		b.log.Error("the store's disk is full and its reserve could not be released", "path", sr.r.Path(), "err", rerr)
		return false, why
	}
	if freed == 0 {
		return false, why
	}
	sr.spent.Inc()
	b.log.Error("THE STORE'S DISK IS FULL: released its reserve so that a revocation and its audit event can be written; "+
		"free space on the store's volume now, or the next revocation is only held in memory (the reserve is made again once there is room)",
		"path", sr.r.Path(), "bytes_freed", freed, "err", err)
	return true, fmt.Sprintf("the broker's disk is full even after releasing the %d-byte reserve kept for revocations: free space on the volume holding the store", freed)
}

// storeFullError is the answer to a call that failed because the store's
// disk is full, nil for any other error: the caller is told what could
// not be done and that revocation and expiry still work.
func storeFullError(err error) *apiError {
	if !sqlitestore.IsFull(err) {
		return nil
	}
	return errorf(http.StatusInsufficientStorage, "store_full", "the broker's disk is full, so this could not be done: free space on the volume holding the broker's store, then try again (revocations and expiry still take effect meanwhile)")
}

package policy

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type reloadReport struct {
	hash string
	err  error
}

func TestReload(t *testing.T) {
	dir := t.TempDir()
	writePolicy(t, dir, map[string]string{"access.rego": fixedPolicy(true, "v1")})
	reg := prometheus.NewRegistry()
	var reports []reloadReport
	e := newEngine(t, Options{Dir: dir, Registerer: reg, OnReload: func(h string, err error) {
		reports = append(reports, reloadReport{h, err})
	}})
	ctx := t.Context()
	decide := func() Decision {
		t.Helper()
		d, err := e.Decide(ctx, baseInput())
		if err != nil {
			t.Fatalf("Decide: %v", err)
		}
		return d
	}
	h1 := e.Hash()
	if d := decide(); !d.Allow || d.Reasons[0] != "v1" || d.PolicyHash != h1 {
		t.Fatalf("Decide() = %+v, want v1's allow", d)
	}

	// A good change is swapped in.
	writePolicy(t, dir, map[string]string{"access.rego": fixedPolicy(false, "v2")})
	if err := e.Reload(ctx); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	h2 := e.Hash()
	if h2 == h1 {
		t.Fatalf("Hash() = %s after a change, want a new hash", h2)
	}
	if d := decide(); d.Allow || d.Reasons[0] != "v2" || d.PolicyHash != h2 {
		t.Fatalf("Decide() = %+v, want v2's deny", d)
	}
	if len(reports) != 1 || reports[0].hash != h2 || reports[0].err != nil {
		t.Fatalf("OnReload calls = %+v, want one with %s and no error", reports, h2)
	}

	// A broken file is kept out; the last good policy still decides.
	writePolicy(t, dir, map[string]string{"broken.rego": "package tether.access\n\nallow if { ] }\n"})
	err := e.Reload(ctx)
	if err == nil || !strings.Contains(err.Error(), "broken.rego:3") {
		t.Fatalf("Reload() = %v, want an error naming broken.rego:3", err)
	}
	t.Log(err)
	if e.Hash() != h2 {
		t.Errorf("Hash() = %s after a failed reload, want the last good %s", e.Hash(), h2)
	}
	if d := decide(); d.Allow || d.Reasons[0] != "v2" || d.PolicyHash != h2 {
		t.Errorf("Decide() = %+v after a failed reload, want v2's deny", d)
	}
	if len(reports) != 2 || reports[1].err == nil || reports[1].hash == h2 || reports[1].hash == "" {
		t.Errorf("OnReload calls = %+v, want a second with the broken content's hash and an error", reports)
	}
	if got := metricValue(t, reg, "tether_policy_reloads_total", "error"); got != 1 {
		t.Errorf("reloads{result=error} = %v, want 1", got)
	}
	if got := metricValue(t, reg, "tether_policy_reloads_total", "ok"); got != 1 {
		t.Errorf("reloads{result=ok} = %v, want 1", got)
	}

	// Fixing it reloads again.
	writePolicy(t, dir, map[string]string{"broken.rego": "package tether.access\n\nextra := true\n"})
	if err := e.Reload(ctx); err != nil {
		t.Fatalf("Reload() after the fix: %v", err)
	}
	if e.Hash() == h2 || len(reports) != 3 || reports[2].err != nil {
		t.Errorf("after the fix: Hash() = %s, OnReload calls = %+v; want a new hash reported without error", e.Hash(), reports)
	}
}

// TestDecideDuringReload: decisions made while the policy is swapped come
// whole from one policy or the other. Run it with -race.
func TestDecideDuringReload(t *testing.T) {
	dir := t.TempDir()
	v1, v2 := fixedPolicy(true, "v1"), fixedPolicy(false, "v2")
	writePolicy(t, dir, map[string]string{"access.rego": v1})
	e := newEngine(t, Options{Dir: dir})
	h1 := e.Hash()
	writePolicy(t, dir, map[string]string{"access.rego": v2})
	if err := e.Reload(t.Context()); err != nil {
		t.Fatal(err)
	}
	h2 := e.Hash()

	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			for n := 0; ctx.Err() == nil; n++ {
				d, err := e.Decide(ctx, baseInput())
				switch {
				case err != nil && ctx.Err() != nil:
					return
				case err != nil:
					errs <- err
					return
				case d.Allow && (d.Reasons[0] != "v1" || d.PolicyHash != h1),
					!d.Allow && (d.Reasons[0] != "v2" || d.PolicyHash != h2):
					errs <- errors.New("torn decision: " + d.Reasons[0] + " from " + d.PolicyHash)
					return
				}
			}
		})
	}
	for i := range 20 {
		src := v1
		if i%2 == 1 {
			src = v2
		}
		writePolicy(t, dir, map[string]string{"access.rego": src})
		if err := e.Reload(ctx); err != nil {
			t.Errorf("Reload: %v", err)
		}
		_ = e.Hash()
	}
	cancel()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestWatch(t *testing.T) {
	dir := t.TempDir()
	writePolicy(t, dir, map[string]string{"access.rego": fixedPolicy(true, "v1")})
	reports := make(chan reloadReport, 16)
	e := newEngine(t, Options{Dir: dir, OnReload: func(h string, err error) { reports <- reloadReport{h, err} }})
	h1 := e.Hash()

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.Watch(ctx, 5*time.Millisecond)
	}()
	t.Cleanup(func() { cancel(); <-done })

	next := func() reloadReport {
		t.Helper()
		select {
		case r := <-reports:
			return r
		case <-time.After(10 * time.Second):
			t.Fatal("Watch reported no reload within 10s")
			return reloadReport{}
		}
	}

	writePolicy(t, dir, map[string]string{"access.rego": fixedPolicy(false, "v2")})
	r := next()
	if r.err != nil || r.hash == h1 || r.hash != e.Hash() {
		t.Fatalf("reload report = %+v (Hash() %s), want the new policy's hash and no error", r, e.Hash())
	}
	d, err := e.Decide(t.Context(), baseInput())
	if err != nil || d.Allow || d.Reasons[0] != "v2" {
		t.Fatalf("Decide() = %+v, %v after Watch's reload, want v2's deny", d, err)
	}

	h2 := e.Hash()
	writePolicy(t, dir, map[string]string{"access.rego": "package tether.access\n\ndecision := [1, }\n"})
	if r := next(); r.err == nil || !strings.Contains(r.err.Error(), "access.rego:3") {
		t.Fatalf("reload report = %+v, want an error naming access.rego:3", r)
	}
	if e.Hash() != h2 {
		t.Errorf("Hash() = %s after a broken change, want the last good %s", e.Hash(), h2)
	}

	// The fix is picked up; the next report is its (TestWatchReportsOnce
	// shows that polls in between report nothing).
	writePolicy(t, dir, map[string]string{"access.rego": fixedPolicy(true, "v3")})
	if r := next(); r.err != nil || r.hash != e.Hash() || r.hash == h2 {
		t.Fatalf("reload report = %+v, want the fix's hash", r)
	}
}

// TestWatchReportsOnce: a broken change is reported once, however many
// polls see it, and the fix after it once. The bubble's fake clock runs
// Watch's ticker: each time.Sleep below is ten polls, taken as soon as
// every goroutine in the bubble is blocked.
func TestWatchReportsOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		writePolicy(t, dir, map[string]string{"access.rego": fixedPolicy(true, "v1")})
		var mu sync.Mutex
		var reports []reloadReport
		e := newEngine(t, Options{Dir: dir, OnReload: func(h string, err error) {
			mu.Lock()
			defer mu.Unlock()
			reports = append(reports, reloadReport{h, err})
		}})
		count := func() (n, errs int) {
			mu.Lock()
			defer mu.Unlock()
			for _, r := range reports {
				if r.err != nil {
					errs++
				}
			}
			return len(reports), errs
		}
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		go e.Watch(ctx, time.Second)

		time.Sleep(10 * time.Second)
		synctest.Wait()
		if n, _ := count(); n != 0 {
			t.Fatalf("OnReload called %d times without a change, want 0", n)
		}

		writePolicy(t, dir, map[string]string{"access.rego": "package tether.access\n\ndecision := [1, }\n"})
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if n, errs := count(); n != 1 || errs != 1 {
			t.Fatalf("after a broken change: %d reports, %d errors; want one error report", n, errs)
		}

		writePolicy(t, dir, map[string]string{"access.rego": fixedPolicy(false, "v2")})
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if n, errs := count(); n != 2 || errs != 1 {
			t.Fatalf("after the fix: %d reports, %d errors; want one more, without error", n, errs)
		}
		if d, err := e.Decide(ctx, baseInput()); err != nil || d.Reasons[0] != "v2" {
			t.Fatalf("Decide() = %+v, %v after the fix, want v2", d, err)
		}
	})
}

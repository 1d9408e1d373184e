package testenv

import (
	"syscall"
	"testing"
)

// Tmpfs mounts a tmpfs of size (mount's size= syntax, e.g. "48m") on a
// new directory, unmounted when the test ends, for tests of a full disk.
// Where it cannot mount (not root, no CAP_SYS_ADMIN) the test is skipped,
// or fails under CI ([Require]).
func Tmpfs(t testing.TB, size string) string {
	t.Helper()
	dir := t.TempDir()
	err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size+",mode=0700")
	Require(t, err == nil, "mount a tmpfs (the test needs root or CAP_SYS_ADMIN): %v", err)
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

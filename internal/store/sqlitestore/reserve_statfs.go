//go:build linux || darwin

package sqlitestore

import (
	"path/filepath"
	"syscall"
)

// freeSpace reports the bytes an unprivileged writer may still use on the
// volume holding path.
func freeSpace(path string) (uint64, bool) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(filepath.Dir(path), &st); err != nil {
		return 0, false
	}
	return uint64(st.Bavail) * uint64(st.Bsize), true
}

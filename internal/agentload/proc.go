package agentload

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// Proc is what Linux's /proc says of a process at one moment.
type Proc struct {
	RSS     int64         // resident set, bytes (VmRSS)
	PeakRSS int64         // highest resident set so far, bytes (VmHWM)
	CPU     time.Duration // user + system time so far
	// WriteBytes is what the process caused to be written to storage
	// (write_bytes of /proc/PID/io); WriteCalls its write system calls
	// (syscw).
	WriteBytes, WriteCalls int64
	// RunQueueWait is how long the process's threads waited for a CPU
	// while runnable, so far (/proc/PID/task/*/schedstat): on a machine
	// shared with other work, what the broker's latency owes to it.
	RunQueueWait time.Duration
}

// LoadAverage is the machine's 1-minute load average (/proc/loadavg).
func LoadAverage() (float64, error) {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0, errors.New("/proc/loadavg: empty")
	}
	return strconv.ParseFloat(f[0], 64)
}

// clockTick is USER_HZ, the unit of /proc/PID/stat's times: 100 on every
// Linux architecture Go supports.
const clockTick = 10 * time.Millisecond

// ReadProc reads the figures of process pid.
func ReadProc(pid int) (Proc, error) {
	var p Proc
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return p, err
	}
	for line := range strings.SplitSeq(string(status), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			return p, fmt.Errorf("/proc/%d/status %s: %w", pid, k, err)
		}
		if k == "VmRSS" {
			p.RSS = kb << 10
		} else {
			p.PeakRSS = kb << 10
		}
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return p, err
	}
	// The command name, in parentheses, may hold spaces: fields count
	// from after its closing one, where field 3 (state) is index 0.
	i := strings.LastIndexByte(string(stat), ')')
	f := strings.Fields(string(stat)[i+1:])
	if i < 0 || len(f) < 13 {
		return p, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return p, fmt.Errorf("/proc/%d/stat: utime %q, stime %q", pid, f[11], f[12])
	}
	p.CPU = time.Duration(utime+stime) * clockTick
	io, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return p, err
	}
	for line := range strings.SplitSeq(string(io), "\n") {
		k, v, _ := strings.Cut(line, ": ")
		n, _ := strconv.ParseInt(v, 10, 64)
		switch k {
		case "write_bytes":
			p.WriteBytes = n
		case "syscw":
			p.WriteCalls = n
		}
	}
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return p, err
	}
	for _, t := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, t.Name()))
		if err != nil {
			continue // the thread ended meanwhile
		}
		if f := strings.Fields(string(b)); len(f) >= 2 {
			ns, _ := strconv.ParseInt(f[1], 10, 64)
			p.RunQueueWait += time.Duration(ns)
		}
	}
	return p, nil
}

package e2e

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/testenv"
)

// listeners returns the local addresses of the TCP sockets in LISTEN state
// that process pid owns (not merely those in its network namespace).
func listeners(t *testing.T, pid int) []netip.AddrPort {
	t.Helper()
	return sockets(t, pid, "0A", "tcp", "tcp6")
}

// udpSockets returns the local addresses of the UDP sockets process pid
// owns.
func udpSockets(t *testing.T, pid int) []netip.AddrPort {
	t.Helper()
	return sockets(t, pid, "", "udp", "udp6")
}

// sockets returns the local addresses of the sockets process pid owns
// that /proc/PID/net/FILE lists for each of files, in the given state
// (hex, as /proc shows it; empty for any).
func sockets(t *testing.T, pid int, state string, files ...string) []netip.AddrPort {
	t.Helper()
	inodes := map[string]bool{}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatalf("read fds of %d: %v", pid, err)
	}
	for _, fd := range fds {
		link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if err == nil && strings.HasPrefix(link, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")] = true
		}
	}
	if len(inodes) == 0 {
		t.Fatalf("process %d has no sockets at all; the check would prove nothing", pid)
	}
	var out []netip.AddrPort
	for _, file := range files {
		f, err := os.Open(fmt.Sprintf("/proc/%d/net/%s", pid, file))
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		sc.Scan() // header
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 10 || (state != "" && fields[3] != state) || !inodes[fields[9]] {
				continue
			}
			out = append(out, parseProcAddr(t, fields[1]))
		}
		f.Close()
	}
	return out
}

// vethNamespace is a network namespace joined to the host by a veth pair,
// with its default route through the host's end.
type vethNamespace struct {
	ns, hostIf, hostIP, nsIP string
}

// newVethNamespace makes one, named after prefix and this process, with
// the /30 10.OCTET.N.0 (N from the process ID) on the veth; it is removed
// when the test ends.
func newVethNamespace(t *testing.T, prefix, ifPrefix string, octet int) vethNamespace {
	t.Helper()
	id, n := os.Getpid()%100000, os.Getpid()%250
	v := vethNamespace{
		ns:     fmt.Sprintf("%s-%d", prefix, id),
		hostIf: fmt.Sprintf("%sA%d", ifPrefix, id),
		hostIP: fmt.Sprintf("10.%d.%d.1", octet, n),
		nsIP:   fmt.Sprintf("10.%d.%d.2", octet, n),
	}
	peer := fmt.Sprintf("%sB%d", ifPrefix, id)
	sh := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	sh("ip", "netns", "add", v.ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", v.ns).Run() })
	sh("ip", "link", "add", v.hostIf, "type", "veth", "peer", "name", peer)
	t.Cleanup(func() { exec.Command("ip", "link", "del", v.hostIf).Run() })
	sh("ip", "link", "set", peer, "netns", v.ns)
	sh("ip", "addr", "add", v.hostIP+"/30", "dev", v.hostIf)
	sh("ip", "link", "set", v.hostIf, "up")
	sh("ip", "netns", "exec", v.ns, "ip", "addr", "add", v.nsIP+"/30", "dev", peer)
	sh("ip", "netns", "exec", v.ns, "ip", "link", "set", peer, "up")
	sh("ip", "netns", "exec", v.ns, "ip", "link", "set", "lo", "up")
	sh("ip", "netns", "exec", v.ns, "ip", "route", "add", "default", "via", v.hostIP)
	return v
}

// parseProcAddr parses /proc/net/tcp's "0100007F:1F90" (little-endian
// 32-bit words) form.
func parseProcAddr(t *testing.T, s string) netip.AddrPort {
	t.Helper()
	hexIP, hexPort, _ := strings.Cut(s, ":")
	port, err := strconv.ParseUint(hexPort, 16, 16)
	if err != nil {
		t.Fatalf("bad /proc address %q", s)
	}
	var b []byte
	for i := 0; i+8 <= len(hexIP); i += 8 {
		w, err := strconv.ParseUint(hexIP[i:i+8], 16, 32)
		if err != nil {
			t.Fatalf("bad /proc address %q", s)
		}
		b = append(b, byte(w), byte(w>>8), byte(w>>16), byte(w>>24))
	}
	ip, ok := netip.AddrFromSlice(b)
	if !ok {
		t.Fatalf("bad /proc address %q", s)
	}
	return netip.AddrPortFrom(ip.Unmap(), uint16(port))
}

// TestAgentOpensNoListener: the running agent owns no LISTEN socket
// outside loopback. The broker, which does listen, shows the check sees
// listeners at all.
func TestAgentOpensNoListener(t *testing.T) {
	b := startBroker(t)
	if ls := listeners(t, b.cmd.Process.Pid); len(ls) == 0 {
		t.Fatal("found no listener of the broker; the /proc parsing is broken")
	}
	res := b.createDeployment(t, "acme", "prod")
	a := b.startAgent(t, filepath.Join(t.TempDir(), "a"), "--pairing-token", res.Pairing.Token)
	a.waitLine(t, `msg="agent online"`, 90*time.Second)
	// A broker call reaches the agent over the tailnet all the same.
	if _, errOut, code := b.cli(t, "deployment", "ping", "acme/prod"); code != 0 {
		t.Fatalf("deployment ping: exit %d: %s", code, errOut)
	}
	for _, l := range listeners(t, a.cmd.Process.Pid) {
		if !l.Addr().IsLoopback() {
			t.Errorf("agent listens on %v, want no listener outside loopback", l)
		}
	}
	// Its only sockets on host interfaces are the tailnet's UDP sockets
	// (WireGuard and disco, IPv4 and IPv6), and they answer nothing that
	// does not come from the tailnet: junk, a WireGuard-sized datagram and
	// a STUN binding request from outside all go unanswered.
	udp := udpSockets(t, a.cmd.Process.Pid)
	if len(udp) == 0 || len(udp) > 2 {
		t.Errorf("agent UDP sockets = %v, want the tailnet's one or two (IPv4, IPv6)", udp)
	}
	probes := [][]byte{
		[]byte("hello?"),
		append([]byte{1, 0, 0, 0}, make([]byte, 144)...),                                        // a WireGuard handshake initiation's size and type
		{0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, // STUN binding request
	}
	for _, s := range udp {
		if !s.Addr().Is4() && !s.Addr().Is4In6() && !s.Addr().IsUnspecified() {
			continue
		}
		c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), s.Port())))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range probes {
			c.Write(p)
		}
		c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		buf := make([]byte, 2048)
		if n, err := c.Read(buf); err == nil {
			t.Errorf("agent UDP socket %v answered an unsolicited datagram from outside the tailnet with %d bytes", s, n)
		}
		c.Close()
	}
}

// listenHelper is the body of the helper process that
// TestAgentBehindInboundFirewall starts inside the namespace: it listens on
// addr, says so, and exits after one connection.
func listenHelper(addr string) int {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Println("listen error:", err)
		return 1
	}
	fmt.Println("listening")
	if c, err := ln.Accept(); err == nil {
		c.Close()
	}
	return 0
}

// TestAgentBehindInboundFirewall runs the agent in its own network
// namespace whose firewall drops every new inbound connection, as in a
// customer VPC with no inbound rule; it must pair, heartbeat and answer
// the broker over the tailnet.
func TestAgentBehindInboundFirewall(t *testing.T) {
	_, ipErr := exec.LookPath("ip")
	_, nftErr := exec.LookPath("nft")
	testenv.Require(t, os.Geteuid() == 0 && ipErr == nil && nftErr == nil,
		"needs root, ip (iproute2) and nft (nftables) to build a firewalled network namespace (root=%v, ip=%v, nft=%v)", os.Geteuid() == 0, ipErr, nftErr)

	v := newVethNamespace(t, "tether-e2e", "tth", 231)
	ns, hostIP, nsIP := v.ns, v.hostIP, v.nsIP
	nft := exec.Command("ip", "netns", "exec", ns, "nft", "-f", "-")
	nft.Stdin = strings.NewReader(`table inet tether_e2e {
	chain input {
		type filter hook input priority 0; policy drop;
		ct state established,related accept
		iif "lo" accept
	}
}`)
	if out, err := nft.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v\n%s", err, out)
	}

	// The firewall really drops new inbound connections: a listener
	// inside the namespace cannot be reached from outside.
	probe := exec.Command("ip", "netns", "exec", ns, os.Args[0])
	probe.Env = append(os.Environ(), "TETHER_E2E_LISTEN="+nsIP+":7777")
	stdout, err := probe.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := probe.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { probe.Process.Kill(); probe.Wait() })
	if line, _ := bufio.NewReader(stdout).ReadString('\n'); strings.TrimSpace(line) != "listening" {
		t.Fatalf("listen helper: %q", line)
	}
	if c, err := net.DialTimeout("tcp", nsIP+":7777", time.Second); err == nil {
		c.Close()
		t.Fatal("connected into the namespace through its firewall; the test setup does not drop inbound connections")
	}

	b := startBroker(t, "--dev-addr", hostIP)
	res := b.createDeployment(t, "acme", "prod")
	agentCmd := exec.Command("ip", "netns", "exec", ns, filepath.Join(binDir, "agent"), "run",
		"--join", b.join, "--state-dir", filepath.Join(t.TempDir(), "a"), "--pairing-token", res.Pairing.Token)
	a := startCmd(t, "agent", agentCmd, nil)
	a.waitLine(t, `msg="agent online"`, 90*time.Second)
	d := b.waitStatus(t, "acme/prod", brokerapi.StatusOnline, 30*time.Second)
	if d.Agent == nil || !strings.HasPrefix(d.Agent.TailnetIP, "100.") {
		t.Fatalf("agent = %+v, want online with a tailnet IP", d.Agent)
	}
	// And the broker's calls reach it, inside the tailnet, through the
	// firewall that drops every new inbound connection.
	if out, errOut, code := b.cli(t, "deployment", "ping", "acme/prod", "--count", "3"); code != 0 {
		t.Fatalf("deployment ping: exit %d: %s", code, errOut)
	} else {
		t.Log(strings.TrimSpace(out))
	}
}

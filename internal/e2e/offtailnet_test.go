package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/tailnet"
	"github.com/tetherhq/tether/internal/testenv"
)

// sinkNamespace makes a network namespace whose only way out is a veth
// into a counting sink: every packet leaving the namespace on a host
// interface is counted and dropped on the other side, so nothing of the
// test reaches a real network. counts reports the packets seen so far: to
// tailnet (100.64.0.0/10) addresses, TCP packets of any kind, and all.
func sinkNamespace(t *testing.T) (ns string, counts func() (cgnat, tcp, all int)) {
	t.Helper()
	_, ipErr := exec.LookPath("ip")
	_, nftErr := exec.LookPath("nft")
	testenv.Require(t, os.Geteuid() == 0 && ipErr == nil && nftErr == nil,
		"needs root, ip (iproute2) and nft (nftables) to build a network namespace with a counting sink (root=%v, ip=%v, nft=%v)", os.Geteuid() == 0, ipErr, nftErr)
	v := newVethNamespace(t, "tether-sink", "tsnk", 232)
	ns, host := v.ns, v.hostIf
	table := fmt.Sprintf("tether_sink_%d", os.Getpid()%100000)
	// The sink: in the host namespace, everything arriving from the veth
	// is counted and dropped before routing, so it goes nowhere. ARP is
	// answered, so that what the namespace routes out is really sent (a
	// gateway that never answers ARP would hide an attempt as "no route
	// to host").
	nft := exec.Command("nft", "-f", "-")
	nft.Stdin = strings.NewReader(fmt.Sprintf(`table netdev %[1]s {
	counter sink_cgnat {}
	counter sink_tcp {}
	counter sink_all {}
	chain sink {
		type filter hook ingress device %[2]s priority 0; policy drop;
		ether type arp accept
		ip daddr 100.64.0.0/10 counter name sink_cgnat
		meta l4proto tcp counter name sink_tcp
		counter name sink_all
		drop
	}
}`, table, host))
	if out, err := nft.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command("nft", "delete", "table", "netdev", table).Run() })
	counts = func() (cgnat, tcp, all int) {
		t.Helper()
		out, err := exec.Command("nft", "-j", "list", "counters", "table", "netdev", table).Output()
		if err != nil {
			t.Fatalf("nft list counters: %v", err)
		}
		var doc struct {
			Nftables []struct {
				Counter *struct {
					Name    string `json:"name"`
					Packets int    `json:"packets"`
				} `json:"counter"`
			} `json:"nftables"`
		}
		if err := json.Unmarshal(out, &doc); err != nil {
			t.Fatalf("nft counters: %v\n%s", err, out)
		}
		seen := 0
		for _, o := range doc.Nftables {
			if o.Counter == nil {
				continue
			}
			seen++
			switch o.Counter.Name {
			case "sink_cgnat":
				cgnat = o.Counter.Packets
			case "sink_tcp":
				tcp = o.Counter.Packets
			case "sink_all":
				all = o.Counter.Packets
			}
		}
		if seen != 3 {
			t.Fatalf("nft counters: found %d of 3\n%s", seen, out)
		}
		return cgnat, tcp, all
	}
	// The sink counts: a datagram sent towards a tailnet address through
	// the default route is seen.
	if out, err := exec.Command("ip", "netns", "exec", ns, "bash", "-c", "echo probe > /dev/udp/100.64.0.250/9").CombinedOutput(); err != nil {
		t.Fatalf("probe datagram: %v\n%s", err, out)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if c, _, _ := counts(); c > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a datagram to 100.64.0.250 from the namespace was not counted: the sink does not see what leaves")
		}
		time.Sleep(20 * time.Millisecond) // polling a kernel counter
	}
	return ns, counts
}

// nsBroker is a dev broker running inside a network namespace; its CLI
// runs there too (its API listens on the namespace's loopback).
type nsBroker struct {
	*proc
	ns, dir string
}

func startNSBroker(t *testing.T, ns, dir string) *nsBroker {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", ns, filepath.Join(binDir, "broker-dev"),
		"serve", "--dev", "--data-dir", dir, "--listen", "127.0.0.1:0", "--heartbeat-interval", "500ms")
	p := startCmd(t, "broker", cmd, nil)
	p.waitLine(t, `msg="broker ready"`, 90*time.Second)
	return &nsBroker{proc: p, ns: ns, dir: dir}
}

func (b *nsBroker) cli(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", b.ns, filepath.Join(binDir, "broker")}, args...)...)
	cmd.Env = append(os.Environ(), "TETHER_CONFIG="+filepath.Join(b.dir, "cli.json"))
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("broker %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

// TestCallToAgentOffTailnetSendsNothing: after a dev broker restart,
// while its agent is not a peer of the (new) tailnet, the broker's call
// to the agent fails fast with "agent not on the tailnet" and no packet
// leaves on any host interface. (Before, tsnet's Dial fell back to the
// host network: the signed call went to the agent's old 100.64 address
// through the default route, in clear.)
func TestCallToAgentOffTailnetSendsNothing(t *testing.T) {
	ns, counts := sinkNamespace(t)
	dir := t.TempDir()
	b := startNSBroker(t, ns, dir)
	out, errOut, code := b.cli(t, "deployment", "create", "--tenant", "acme", "--name", "prod", "--output", "json")
	if code != 0 {
		t.Fatalf("deployment create: exit %d: %s", code, errOut)
	}
	var res brokerapi.CreateDeploymentResponse
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatal(err)
	}
	a := startCmd(t, "agent", exec.Command("ip", "netns", "exec", ns, filepath.Join(binDir, "agent"), "run",
		"--join", filepath.Join(dir, "join.json"), "--state-dir", filepath.Join(t.TempDir(), "a"), "--pairing-token", res.Pairing.Token), nil)
	a.waitLine(t, `msg="agent online"`, 90*time.Second)
	if _, errOut, code := b.cli(t, "deployment", "ping", "acme/prod"); code != 0 {
		t.Fatalf("deployment ping while online: exit %d: %s", code, errOut)
	}

	// The agent stops; the broker restarts on the same data dir. Its dev
	// tailnet still knows the agent's node, which no longer answers: the
	// call fails within the tailnet's dial bound, and nothing leaves.
	a.stop()
	b.stop()
	b = startNSBroker(t, ns, dir)
	cgnat0, tcp0, _ := counts()
	start := time.Now()
	_, errOut, code = b.cli(t, "deployment", "ping", "acme/prod")
	took := time.Since(start)
	if code == 0 || !strings.Contains(errOut, "did not answer on the tailnet") {
		t.Errorf("deployment ping of an agent that is gone: exit %d, stderr %q; want a failure saying it did not answer", code, errOut)
	}
	if took > tailnet.DialTimeout+5*time.Second {
		t.Errorf("deployment ping of an agent that is gone took %v, want at most the dial bound %v and a little", took, tailnet.DialTimeout)
	}
	if cgnat, tcp, _ := counts(); cgnat != cgnat0 || tcp != tcp0 {
		t.Fatalf("packets left the namespace on a host interface while calling an agent that is gone: %d to 100.64.0.0/10, %d TCP; want none", cgnat-cgnat0, tcp-tcp0)
	}

	// Then a dev tailnet that lost its nodes (as a control server that
	// lost its state would): the agent's node is unknown.
	b.stop()
	if err := os.Remove(filepath.Join(dir, "devnet-nodes.json")); err != nil {
		t.Fatal(err)
	}
	b = startNSBroker(t, ns, dir)
	cgnat0, tcp0, all0 := counts()
	start = time.Now()
	_, errOut, code = b.cli(t, "deployment", "ping", "acme/prod")
	took = time.Since(start)
	if code == 0 || !strings.Contains(errOut, "agent not on the tailnet") {
		t.Errorf("deployment ping of an agent off the tailnet: exit %d, stderr %q; want a failure saying \"agent not on the tailnet\"", code, errOut)
	}
	if took > 10*time.Second {
		t.Errorf("deployment ping took %v to fail, want it to fail fast", took)
	}
	cgnat, tcp, all := counts()
	t.Logf("sink: %d packets to tailnet addresses, %d TCP, %d in all during the call", cgnat-cgnat0, tcp-tcp0, all-all0)
	if cgnat != cgnat0 || tcp != tcp0 {
		t.Fatalf("packets left the namespace on a host interface during the call: %d to 100.64.0.0/10, %d TCP; want none", cgnat-cgnat0, tcp-tcp0)
	}
}

// TestAgentReconnectsAfterBrokerRestart: an agent running through a
// broker restart comes back online by itself, within 10 s of the broker
// being back, and answers the broker's calls again.
func TestAgentReconnectsAfterBrokerRestart(t *testing.T) {
	dir := t.TempDir()
	args := []string{"serve", "--dev", "--data-dir", dir, "--listen", "127.0.0.1:0", "--heartbeat-interval", "500ms"}
	p := start(t, "broker-dev", nil, args...)
	p.waitLine(t, `msg="broker ready"`, 90*time.Second)
	b := &devBroker{proc: p, dir: dir, cliJSON: filepath.Join(dir, "cli.json"), join: filepath.Join(dir, "join.json")}
	res := b.createDeployment(t, "acme", "prod")
	a := b.startAgent(t, filepath.Join(t.TempDir(), "a"), "--pairing-token", res.Pairing.Token, "--log-level", "debug")
	a.waitLine(t, `msg="agent online"`, 90*time.Second)

	b.stop()
	p = start(t, "broker-dev", nil, args...)
	p.waitLine(t, `msg="broker ready"`, 90*time.Second)
	back := time.Now()
	b.proc = p
	// Online again means a heartbeat the new broker process received.
	for {
		d := b.show(t, "acme/prod")
		if d.Agent != nil && d.Agent.LastSeen != nil && d.Agent.LastSeen.After(back) && d.AgentStatus == brokerapi.StatusOnline {
			break
		}
		if time.Since(back) > 10*time.Second {
			t.Fatalf("agent not back within 10s of the broker's restart: %+v", d.Agent)
		}
		time.Sleep(100 * time.Millisecond) // polling an observable state, not synchronising
	}
	if _, errOut, code := b.cli(t, "deployment", "ping", "acme/prod"); code != 0 {
		t.Fatalf("deployment ping after the restart: exit %d: %s", code, errOut)
	}
	t.Logf("agent back online and answering %v after the broker was ready again", time.Since(back).Round(time.Millisecond))
}

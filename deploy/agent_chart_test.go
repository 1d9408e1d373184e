package deploy

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode"

	"helm.sh/helm/v4/pkg/chart/common"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
)

const agentChart = "helm/tether-agent"

// agentFull is the agent chart's every-option values file.
var agentFull = []string{"ci/full-values.yaml"}

// joinInstead sets a join file in place of the tailnet flags, which
// --join excludes.
var joinInstead = map[string]any{
	"agent.join":         map[string]any{"value": `{"control_url":"https://controlplane.tailscale.com","auth_key":"tskey-auth-x","broker_name":"b","broker_key":"ed25519:x"}`},
	"agent.controlUrl":   "",
	"agent.brokerName":   "",
	"agent.brokerTag":    "",
	"agent.brokerKey":    "",
	"agent.authKey":      map[string]any{"existingSecret": ""},
	"agent.pairingToken": map[string]any{"value": "", "existingSecret": "tether-pairing"},
}

// TestAgentChartLockedDown renders the agent chart with its defaults, with
// every option set, and with a join file, and holds each rendering to the
// agent's deployment rules: one pod on a ReadWriteOnce claim, recreated
// rather than rolled; nothing listening (no Service, Ingress or container
// port); non-root, read-only, no capability, RuntimeDefault seccomp; no
// service-account token; secrets mounted from Secrets, never in the pod
// spec; a NetworkPolicy with no ingress rule and egress to DNS, HTTPS,
// the tailnet's UDP and the selected ClickHouse and Prometheus only.
func TestAgentChartLockedDown(t *testing.T) {
	for _, tt := range []struct {
		name    string
		files   []string
		set     map[string]any
		secrets []string // literal secret values the values hold
	}{
		{name: "defaults"},
		{name: "full", files: agentFull, secrets: []string{"tpt_example-token"}},
		{name: "join", files: agentFull, set: joinInstead, secrets: []string{"tskey-auth-x"}},
		{name: "chart secrets", set: map[string]any{
			"agent.authKey.value": "tskey-auth-secret", "agent.pairingToken.value": "tpt_secret", "agent.clickhousePassword.value": "ch-secret",
		}, secrets: []string{"tskey-auth-secret", "tpt_secret", "ch-secret"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := mustRender(t, agentChart, tt.files, tt.set)
			for _, o := range m.objects {
				switch o.obj.(type) {
				case *appsv1.Deployment, *corev1.ServiceAccount, *corev1.Secret, *corev1.PersistentVolumeClaim, *networkingv1.NetworkPolicy:
				default:
					t.Errorf("the agent chart renders %s %s (%s): nothing listens, so it has no Service or Ingress, and nothing else", o.kind, o.name, o.source)
				}
			}
			d := one[appsv1.Deployment](t, m)
			checkAgentDeployment(t, m, d, true)
			checkPodLockedDown(t, "agent", &d.Spec.Template.Spec)
			checkAgentNetworkPolicy(t, one[networkingv1.NetworkPolicy](t, m), d)

			js, _ := json.Marshal(d)
			for _, s := range tt.secrets {
				if strings.Contains(string(js), s) {
					t.Errorf("the Deployment holds the secret %q: secrets go in a Secret, mounted as a file", s)
				}
			}
			secrets := all[corev1.Secret](m)
			ann := d.Spec.Template.Annotations["checksum/secret"]
			switch {
			case len(tt.secrets) > 0 && (len(secrets) != 1 || ann == ""):
				t.Errorf("values with secrets rendered %d Secrets, pod annotation checksum/secret %q; want the chart's Secret and its checksum", len(secrets), ann)
			case len(tt.secrets) == 0 && (len(secrets) != 0 || ann != ""):
				t.Errorf("values without secrets rendered %d Secrets and checksum %q, want none", len(secrets), ann)
			}
			for _, s := range secrets {
				for _, v := range tt.secrets {
					if !slices.ContainsFunc(slices.Collect(mapValues(s.Data)), func(b []byte) bool { return string(b) == v }) && !strings.Contains(v, "tskey-auth-x") {
						t.Errorf("the chart's Secret lacks %q", v)
					}
				}
			}
		})
	}
}

func mapValues(m map[string][]byte) func(func([]byte) bool) {
	return func(yield func([]byte) bool) {
		for _, v := range m {
			if !yield(v) {
				return
			}
		}
	}
}

func checkAgentDeployment(t *testing.T, m *manifest, d *appsv1.Deployment, wantProbes bool) {
	t.Helper()
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 1 {
		t.Errorf("replicas = %v, want 1: two agents on one state would fight over its tailnet node", d.Spec.Replicas)
	}
	if d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
		t.Errorf("strategy = %q, want Recreate: the state claim is ReadWriteOnce", d.Spec.Strategy.Type)
	}
	pod := &d.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers, want the agent alone", len(pod.Containers))
	}
	c := pod.Containers[0]
	if len(c.Ports) != 0 {
		t.Errorf("the agent container declares ports %v: it listens on nothing but loopback", c.Ports)
	}
	if len(c.Args) == 0 || c.Args[0] != "run" {
		t.Fatalf("args = %q, want 'run' and its flags", c.Args)
	}
	stateDir := flagValue(c.Args, "state-dir")
	v := volumeAt(pod, c, stateDir)
	if v == nil || v.PersistentVolumeClaim == nil {
		t.Fatalf("--state-dir %s is not on a PersistentVolumeClaim (%+v): the agent's key and witness state must survive restarts", stateDir, v)
	}
	claims := all[corev1.PersistentVolumeClaim](m)
	if len(claims) == 1 {
		pvc := claims[0]
		if pvc.Name != v.PersistentVolumeClaim.ClaimName || !slices.Equal(pvc.Spec.AccessModes, []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}) {
			t.Errorf("claim %s %v, pod uses %s; want the pod's ReadWriteOnce claim", pvc.Name, pvc.Spec.AccessModes, v.PersistentVolumeClaim.ClaimName)
		}
		if pvc.Annotations["helm.sh/resource-policy"] != "keep" {
			t.Errorf("the state claim is deleted by helm uninstall: it holds the agent's key")
		}
	}
	if tmp := volumeAt(pod, c, "/tmp"); tmp == nil || tmp.EmptyDir == nil {
		t.Errorf("/tmp is not an emptyDir: %+v", tmp)
	}
	// Each secret flag reads a file of the projected Secret volume.
	for _, f := range []string{"auth-key", "pairing-token", "join", "clickhouse-password-file"} {
		val := flagValue(c.Args, f)
		if val == "" {
			continue
		}
		path := strings.TrimPrefix(val, "file:")
		if !strings.HasPrefix(path, "/etc/tether/secrets/") || volumeAt(pod, c, "/etc/tether/secrets") == nil {
			t.Errorf("--%s=%s is not a file of the Secret volume", f, val)
		}
		if (f == "auth-key" || f == "pairing-token") != strings.HasPrefix(val, "file:") {
			t.Errorf("--%s=%s: want file:PATH for the secret flags that take references, PATH for --join and --clickhouse-password-file", f, val)
		}
		if !projects(volumeAt(pod, c, "/etc/tether/secrets"), strings.TrimPrefix(path, "/etc/tether/secrets/")) {
			t.Errorf("--%s=%s: the Secret volume has no such file", f, val)
		}
	}
	// Probes run the agent binary itself: there is no shell, and the
	// health address is loopback-only, out of the kubelet's reach.
	addr := flagValue(c.Args, "health-addr")
	for name, p := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
		if p != nil && (addr == "" || p.Exec == nil || len(p.Exec.Command) < 4 || p.Exec.Command[0] != "/agent" || p.Exec.Command[1] != "health" || !slices.Contains(p.Exec.Command, addr)) {
			t.Errorf("%s probe %+v, want exec /agent health --addr %q", name, p, addr)
		}
	}
	if wantProbes && (c.LivenessProbe == nil || c.ReadinessProbe == nil) {
		t.Errorf("probes enabled, but liveness %v, readiness %v", c.LivenessProbe, c.ReadinessProbe)
	}
}

// projects reports whether the projected volume v has a file at path.
func projects(v *corev1.Volume, path string) bool {
	if v == nil || v.Projected == nil {
		return false
	}
	for _, s := range v.Projected.Sources {
		if s.Secret == nil {
			continue
		}
		for _, it := range s.Secret.Items {
			if it.Path == path {
				return true
			}
		}
	}
	return false
}

// flagValue returns the value of --name=VALUE in args.
func flagValue(args []string, name string) string {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v
		}
	}
	return ""
}

type portKey struct {
	proto corev1.Protocol
	port  int32
}

func checkAgentNetworkPolicy(t *testing.T, np *networkingv1.NetworkPolicy, d *appsv1.Deployment) {
	t.Helper()
	if !slices.Equal(np.Spec.PolicyTypes, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}) {
		t.Errorf("policyTypes = %v, want [Ingress Egress]", np.Spec.PolicyTypes)
	}
	if len(np.Spec.Ingress) != 0 {
		t.Errorf("ingress rules %v, want none: nothing may connect to the agent", np.Spec.Ingress)
	}
	for k, v := range np.Spec.PodSelector.MatchLabels {
		if d.Spec.Template.Labels[k] != v {
			t.Errorf("the policy selects %s=%s, which the agent's pod does not carry", k, v)
		}
	}
	if len(np.Spec.PodSelector.MatchLabels) == 0 {
		t.Errorf("the policy selects every pod of the namespace")
	}
	allowed := map[portKey]string{
		{corev1.ProtocolUDP, 53}: "dns", {corev1.ProtocolTCP, 53}: "dns",
		{corev1.ProtocolTCP, 443}: "https", {corev1.ProtocolUDP, 41641}: "tailnet", {corev1.ProtocolUDP, 3478}: "tailnet",
		{corev1.ProtocolTCP, 8123}: "upstream", {corev1.ProtocolTCP, 8443}: "upstream", {corev1.ProtocolTCP, 9090}: "upstream",
	}
	seen := map[string]bool{}
	for i, r := range np.Spec.Egress {
		if len(r.Ports) == 0 {
			t.Errorf("egress rule %d allows every port", i)
		}
		kinds := map[string]bool{}
		for _, p := range r.Ports {
			if p.Port == nil || p.EndPort != nil || p.Protocol == nil {
				t.Errorf("egress rule %d: port %+v, want one protocol and port", i, p)
				continue
			}
			k, ok := allowed[portKey{*p.Protocol, p.Port.IntVal}]
			if !ok {
				t.Errorf("egress rule %d allows %s %v, not DNS, HTTPS, the tailnet's UDP, ClickHouse or Prometheus", i, *p.Protocol, p.Port)
			}
			kinds[k] = true
		}
		if len(kinds) > 1 {
			t.Errorf("egress rule %d mixes %v: each kind of peer has its own rule", i, kinds)
		}
		for k := range kinds {
			seen[k] = true
			switch k {
			case "dns":
				if len(r.To) != 1 || r.To[0].PodSelector == nil || r.To[0].PodSelector.MatchLabels["k8s-app"] != "kube-dns" || r.To[0].NamespaceSelector == nil {
					t.Errorf("DNS egress goes to %+v, want the cluster's kube-dns only", r.To)
				}
			case "upstream":
				for _, to := range r.To {
					if to.IPBlock != nil || to.PodSelector == nil || len(to.PodSelector.MatchLabels)+len(to.PodSelector.MatchExpressions) == 0 {
						if to.NamespaceSelector == nil || len(to.NamespaceSelector.MatchLabels)+len(to.NamespaceSelector.MatchExpressions) == 0 {
							t.Errorf("ClickHouse/Prometheus egress to %+v selects every pod", to)
						}
					}
				}
				if len(r.To) == 0 {
					t.Errorf("ClickHouse/Prometheus egress rule %d goes anywhere", i)
				}
			}
		}
	}
	for _, k := range []string{"dns", "https", "tailnet", "upstream"} {
		if !seen[k] {
			t.Errorf("no egress rule for %s: the agent could not work", k)
		}
	}
}

// TestAgentChartExistingSecrets: given the names of existing Secrets, the
// chart creates none, mounts those, and no value of them is in the chart.
func TestAgentChartExistingSecrets(t *testing.T) {
	m := mustRender(t, agentChart, nil, map[string]any{
		"agent.authKey":             map[string]any{"existingSecret": "ts-auth", "key": "key"},
		"agent.pairingToken":        map[string]any{"existingSecret": "pairing", "key": "token"},
		"agent.clickhousePassword":  map[string]any{"existingSecret": "ch", "key": "password"},
		"persistence.existingClaim": "agent-state",
	})
	if s := all[corev1.Secret](m); len(s) != 0 {
		t.Errorf("rendered %d Secrets, want none with existing Secrets named", len(s))
	}
	if c := all[corev1.PersistentVolumeClaim](m); len(c) != 0 {
		t.Errorf("rendered %d claims, want none with an existing claim named", len(c))
	}
	d := one[appsv1.Deployment](t, m)
	pod := &d.Spec.Template.Spec
	if _, ok := d.Spec.Template.Annotations["checksum/secret"]; ok {
		t.Errorf("checksum/secret annotated without a chart-managed Secret")
	}
	want := map[string]string{"ts-auth/key": "auth-key", "pairing/token": "pairing-token", "ch/password": "clickhouse-password-file"}
	got := map[string]string{}
	v := volumeAt(pod, pod.Containers[0], "/etc/tether/secrets")
	if v == nil || v.Projected == nil {
		t.Fatalf("no Secret volume at /etc/tether/secrets")
	}
	for _, s := range v.Projected.Sources {
		for _, it := range s.Secret.Items {
			got[s.Secret.Name+"/"+it.Key] = it.Path
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("the Secret volume projects %v, want %v", got, want)
	}
	if *v.Projected.DefaultMode&0o007 != 0 {
		t.Errorf("secret files are mode %o: readable by others", *v.Projected.DefaultMode)
	}
	if pvc := volumeAt(pod, pod.Containers[0], "/var/lib/tether-agent"); pvc == nil || pvc.PersistentVolumeClaim == nil || pvc.PersistentVolumeClaim.ClaimName != "agent-state" {
		t.Errorf("state volume %+v, want the existing claim agent-state", pvc)
	}
}

// TestAgentChartRefuses: values that cannot work fail the render, naming
// the value.
func TestAgentChartRefuses(t *testing.T) {
	for _, tt := range []struct {
		name string
		set  map[string]any
		want string
	}{
		{"join and tailnet flags", map[string]any{"agent.join": map[string]any{"value": "{}"}, "agent.controlUrl": "https://c.example"}, "agent.join: give either"},
		{"value and existing secret", map[string]any{"agent.authKey": map[string]any{"value": "k", "existingSecret": "s"}}, "agent.authKey: give value or existingSecret"},
		{"upstream selecting everything", map[string]any{"networkPolicy.clickhouse": map[string]any{"podSelector": nil, "namespaceSelector": nil, "ports": []any{8123}}}, "networkPolicy.clickhouse: give a podSelector"},
		{"no state dir", map[string]any{"agent.stateDir": ""}, "agent.stateDir"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := render(t, agentChart, nil, tt.set)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("render with %v = %v, want an error containing %q", tt.set, err, tt.want)
			}
		})
	}
}

// flagAliases maps the 'agent run' flags whose values key is not their
// camelCased name: the chart takes the password, not its file.
var flagAliases = map[string]string{"clickhouse-password-file": "clickhousePassword"}

// TestAgentChartExposesEveryFlag fails when 'agent run' gains a flag the
// chart has no value for, or the chart has a value for a flag that is
// gone, and checks that every flag set in the values reaches the
// container's arguments. The flags are read from the source of 'agent
// run' (internal/agentcli), as kong names them.
func TestAgentChartExposesEveryFlag(t *testing.T) {
	flags := runFlags(t, "../internal/agentcli/agentcli.go", "runCmd")
	if len(flags) < 20 {
		t.Fatalf("found %d flags of 'agent run' (%v): the parser lost its way", len(flags), flags)
	}
	vals, err := common.ReadValuesFile(agentChart + "/values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	agentVals, _ := vals["agent"].(map[string]any)
	keys := map[string]bool{}
	for k := range agentVals {
		keys[k] = true
	}
	for _, f := range flags {
		k := valuesKey(f)
		if !keys[k] {
			t.Errorf("'agent run --%s' has no value agent.%s in %s/values.yaml: add it (and to the templates' flag lists)", f, k, agentChart)
		}
		delete(keys, k)
	}
	for k := range keys {
		t.Errorf("values.yaml has agent.%s, which is no flag of 'agent run'", k)
	}

	full := mustRender(t, agentChart, agentFull, nil)
	join := mustRender(t, agentChart, agentFull, joinInstead)
	args := append(one[appsv1.Deployment](t, full).Spec.Template.Spec.Containers[0].Args, one[appsv1.Deployment](t, join).Spec.Template.Spec.Containers[0].Args...)
	for _, f := range flags {
		if !slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--"+f+"=") }) {
			t.Errorf("--%s is set in the full values but not in the container's args %q", f, args)
		}
	}
	// Integers are passed as digits, not in Go's float notation.
	if got := flagValue(args, "max-memory-usage"); got != "1000000000" {
		t.Errorf("--max-memory-usage=%s, want 1000000000", got)
	}
}

// valuesKey is the values key of flag: its camelCased name.
func valuesKey(flag string) string {
	if k, ok := flagAliases[flag]; ok {
		return k
	}
	parts := strings.Split(flag, "-")
	for i := 1; i < len(parts); i++ {
		parts[i] = strings.ToUpper(parts[i][:1]) + parts[i][1:]
	}
	return strings.Join(parts, "")
}

// runFlags parses the Go file at path and returns the flag names of the
// kong command struct typ: each field's name tag, else its name in
// kebab-case as kong derives it; embedded, skipped (kong:"-") and
// positional (arg:"") fields are not flags.
func runFlags(t *testing.T, path, typ string) []string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.SkipObjectResolution)
	if err != nil {
		t.Fatal(err)
	}
	var flags []string
	found := false
	ast.Inspect(f, func(n ast.Node) bool {
		ts, ok := n.(*ast.TypeSpec)
		if !ok || ts.Name.Name != typ {
			return true
		}
		found = true
		st, ok := ts.Type.(*ast.StructType)
		if !ok {
			t.Fatalf("%s is not a struct", typ)
		}
		for _, field := range st.Fields.List {
			if len(field.Names) == 0 {
				t.Errorf("%s embeds %v: read its flags too", typ, field.Type)
				continue
			}
			tag := reflect.StructTag("")
			if field.Tag != nil {
				s, err := strconv.Unquote(field.Tag.Value)
				if err != nil {
					t.Fatal(err)
				}
				tag = reflect.StructTag(s)
			}
			if tag.Get("kong") == "-" {
				continue
			}
			if _, ok := tag.Lookup("arg"); ok {
				continue
			}
			for _, name := range field.Names {
				if !name.IsExported() {
					continue
				}
				flag := tag.Get("name")
				if flag == "" {
					flag = kebab(name.Name)
				}
				flags = append(flags, flag)
			}
		}
		return false
	})
	if !found {
		t.Fatalf("%s declares no type %s", path, typ)
	}
	return flags
}

// kebab turns a Go field name into a flag name as kong does: StateDir →
// state-dir, CHURL → churl.
func kebab(s string) string {
	r := []rune(s)
	var b strings.Builder
	for i, c := range r {
		if unicode.IsUpper(c) && i > 0 && (unicode.IsLower(r[i-1]) || (i+1 < len(r) && unicode.IsLower(r[i+1]) && unicode.IsUpper(r[i-1]))) {
			b.WriteByte('-')
		}
		b.WriteRune(unicode.ToLower(c))
	}
	return b.String()
}

// jsonKeys parses the Go file at path and returns the json names of the
// fields of struct typ, embedded structs' included.
func jsonKeys(t *testing.T, path, typ string) map[string]bool {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.SkipObjectResolution)
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]bool{}
	ast.Inspect(f, func(n ast.Node) bool {
		ts, ok := n.(*ast.TypeSpec)
		if !ok || ts.Name.Name != typ {
			return true
		}
		for _, field := range ts.Type.(*ast.StructType).Fields.List {
			if field.Tag == nil {
				continue
			}
			s, _ := strconv.Unquote(field.Tag.Value)
			name, _, _ := strings.Cut(reflect.StructTag(s).Get("json"), ",")
			if name != "" && name != "-" {
				keys[name] = true
			}
		}
		return false
	})
	return keys
}

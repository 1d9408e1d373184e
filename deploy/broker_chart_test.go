package deploy

import (
	"encoding/json"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
)

const brokerChart = "helm/tether-broker"

// brokerMinimal is what a broker cannot start without (TLS, store,
// tailnet key, identity): the chart's defaults plus these.
var brokerMinimal = []string{"ci/minimal-values.yaml"}

// TestBrokerChartLockedDown renders the broker chart with its defaults
// plus the required values, and with every option set, and checks: a
// StatefulSet (each replica its own tailnet node, hostname and claim) on
// PostgreSQL through a DSN Secret, the config from a ConfigMap that
// 'broker serve' accepts, TLS from a Secret, the signing key shared from
// a Secret, the same locked-down pod as the agent, a Service, an
// Ingress only with TLS, a PodDisruptionBudget with several replicas,
// and no secret value anywhere but in a Secret.
func TestBrokerChartLockedDown(t *testing.T) {
	for _, tt := range []struct {
		name     string
		files    []string
		replicas int32
		secrets  []string
	}{
		{name: "minimal", files: brokerMinimal, replicas: 1},
		{name: "full", files: []string{"ci/full-values.yaml"}, replicas: 3,
			secrets: []string{"secret-db-password", "ghp_secret-github-token", "00112233445566778899aabbccddeeff", "secret-tls-key"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := mustRender(t, brokerChart, tt.files, nil)
			for _, o := range m.objects {
				switch o.obj.(type) {
				case *appsv1.StatefulSet, *corev1.ServiceAccount, *corev1.Secret, *corev1.ConfigMap, *corev1.Service, *networkingv1.Ingress, *policyv1.PodDisruptionBudget:
				default:
					t.Errorf("the broker chart renders %s %s (%s), which this test does not check", o.kind, o.name, o.source)
				}
			}
			ss := one[appsv1.StatefulSet](t, m)
			pod := &ss.Spec.Template.Spec
			checkPodLockedDown(t, "broker", pod)
			if ss.Spec.Replicas == nil || *ss.Spec.Replicas != tt.replicas {
				t.Errorf("replicas = %v, want %d", ss.Spec.Replicas, tt.replicas)
			}
			c := pod.Containers[0]

			// Each replica: its own data claim, its pod name as tailnet hostname.
			if len(ss.Spec.VolumeClaimTemplates) != 1 || !mountsAt(c, "/var/lib/tether-broker") || volumeAt(pod, c, "/var/lib/tether-broker") != nil {
				t.Errorf("the data dir is not on a per-pod claim template: %+v", ss.Spec.VolumeClaimTemplates)
			}
			if e := envVar(c, "TETHER_HOSTNAME"); e == nil || e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != "metadata.name" {
				t.Errorf("TETHER_HOSTNAME = %+v, want the pod's name: each replica is its own tailnet node", e)
			}

			// The config: a ConfigMap 'broker serve' reads, secrets as file: references.
			if !slices.Equal(c.Args, []string{"serve", "--config", "/etc/tether/config/broker.json"}) {
				t.Errorf("args = %q", c.Args)
			}
			cm := one[corev1.ConfigMap](t, m)
			if v := volumeAt(pod, c, "/etc/tether/config"); v == nil || v.ConfigMap == nil || v.ConfigMap.Name != cm.Name {
				t.Errorf("/etc/tether/config is %+v, want the ConfigMap %s", v, cm.Name)
			}
			cfg := brokerConfig(t, cm.Data["broker.json"])
			for k, want := range map[string]string{
				"store_driver": "postgres", "store_dsn": "file:/etc/tether/secrets/store-dsn", "auth_key": "file:/etc/tether/secrets/auth-key",
				"tls_cert": "/etc/tether/tls/tls.crt", "tls_key": "/etc/tether/tls/tls.key", "data_dir": "/var/lib/tether-broker",
			} {
				if cfg[k] != want {
					t.Errorf("config %s = %v, want %q", k, cfg[k], want)
				}
			}
			if _, port, _ := strings.Cut(cfg["listen"].(string), ":"); port != strconv.Itoa(int(c.Ports[0].ContainerPort)) {
				t.Errorf("listen %v, container port %d", cfg["listen"], c.Ports[0].ContainerPort)
			}
			if tls := volumeAt(pod, c, "/etc/tether/tls"); tls == nil || tls.Secret == nil {
				t.Errorf("TLS is not mounted from a Secret: %+v", tls)
			}
			// Every file: reference in the config is a mounted file.
			for _, ref := range fileRefs(cm.Data["broker.json"]) {
				dir, name, _ := strings.Cut(strings.TrimPrefix(ref, "/etc/tether/"), "/")
				if dir != "secrets" || !projects(volumeAt(pod, c, "/etc/tether/secrets"), name) {
					t.Errorf("the config refers to %s, which is not a file of the Secret volume", ref)
				}
			}

			// The signing key: shared by every replica from one Secret.
			if tt.replicas > 1 {
				var found bool
				for _, vm := range c.VolumeMounts {
					if vm.MountPath == "/var/lib/tether-broker/broker.key" && vm.ReadOnly && vm.SubPath == "broker.key" {
						found = true
					}
				}
				if !found {
					t.Errorf("replicas %d without the shared signing key mounted at DATA_DIR/broker.key", tt.replicas)
				}
				pdb := one[policyv1.PodDisruptionBudget](t, m)
				if !reflect.DeepEqual(pdb.Spec.Selector.MatchLabels, ss.Spec.Selector.MatchLabels) {
					t.Errorf("the PodDisruptionBudget selects %v, the brokers are %v", pdb.Spec.Selector.MatchLabels, ss.Spec.Selector.MatchLabels)
				}
			} else if n := len(all[policyv1.PodDisruptionBudget](m)); n != 0 {
				t.Errorf("one replica with %d PodDisruptionBudgets: a drain could never evict it", n)
			}

			// The Service reaches the API port; an Ingress has TLS.
			svc := one[corev1.Service](t, m)
			if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].TargetPort.StrVal != "https" || !reflect.DeepEqual(svc.Spec.Selector, ss.Spec.Selector.MatchLabels) {
				t.Errorf("service %+v does not reach the brokers' https port", svc.Spec)
			}
			for _, ing := range all[networkingv1.Ingress](m) {
				if len(ing.Spec.TLS) == 0 {
					t.Errorf("Ingress %s without TLS", ing.Name)
				}
			}
			for _, p := range []*corev1.Probe{c.LivenessProbe, c.ReadinessProbe} {
				if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/healthz" || p.HTTPGet.Scheme != corev1.URISchemeHTTPS {
					t.Errorf("probe %+v, want GET /healthz over HTTPS", p)
				}
			}

			// Secret values are in Secrets, nowhere else.
			for _, o := range m.objects {
				if _, ok := o.obj.(*corev1.Secret); ok {
					continue
				}
				js, _ := json.Marshal(o.obj)
				for _, s := range tt.secrets {
					if strings.Contains(string(js), s) {
						t.Errorf("%s %s holds the secret %q", o.kind, o.name, s)
					}
				}
			}
		})
	}
}

// TestBrokerChartExistingSecrets: with Secret names given, the chart
// makes no Secret and mounts those.
func TestBrokerChartExistingSecrets(t *testing.T) {
	m := mustRender(t, brokerChart, brokerMinimal, map[string]any{
		"replicas":       2,
		"signingKey":     map[string]any{"existingSecret": "broker-signing", "key": "seed"},
		"networkSealKey": map[string]any{"existingSecret": "broker-seal", "key": "seal"},
	})
	if s := all[corev1.Secret](m); len(s) != 0 {
		t.Errorf("rendered %d Secrets, want none", len(s))
	}
	ss := one[appsv1.StatefulSet](t, m)
	got := map[string]string{}
	for _, v := range ss.Spec.Template.Spec.Volumes {
		switch {
		case v.Secret != nil:
			got[v.Name] = v.Secret.SecretName
		case v.Projected != nil:
			for _, s := range v.Projected.Sources {
				for _, it := range s.Secret.Items {
					got[it.Path] = s.Secret.Name + "/" + it.Key
				}
			}
		}
	}
	want := map[string]string{"tls": "tether-broker-tls", "signing-key": "broker-signing", "store-dsn": "tether-store/dsn", "auth-key": "tether-tailnet/auth-key", "network-seal-key": "broker-seal/seal"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("secret volumes %v, want %v", got, want)
	}
	if _, ok := ss.Spec.Template.Annotations["checksum/secret"]; ok {
		t.Errorf("checksum/secret without a chart-managed Secret")
	}
}

// TestBrokerChartRefuses: what the broker cannot run without, or values
// that would break it, fail the render with the value named.
func TestBrokerChartRefuses(t *testing.T) {
	for _, tt := range []struct {
		name  string
		files []string
		set   map[string]any
		want  string
	}{
		{"defaults alone", nil, nil, "config.identity"},
		{"no TLS", brokerMinimal, map[string]any{"tls.existingSecret": ""}, "tls: the broker serves its API over TLS"},
		{"no identity", brokerMinimal, map[string]any{"config": map[string]any{"identity": nil}}, "config.identity"},
		{"no store", brokerMinimal, map[string]any{"store.dsn": map[string]any{"existingSecret": ""}}, "store.dsn"},
		{"no tailnet key", brokerMinimal, map[string]any{"tailnet.authKey": map[string]any{"existingSecret": ""}}, "tailnet.authKey"},
		{"replicas without a shared key", brokerMinimal, map[string]any{"replicas": 2}, "signingKey: several replicas"},
		{"chart-owned setting", brokerMinimal, map[string]any{"config.store_dsn": "postgres://x"}, "config.store_dsn is set by the chart"},
		{"ingress without TLS", brokerMinimal, map[string]any{"ingress": map[string]any{"enabled": true, "hosts": []any{"t.example"}}}, "ingress.tls"},
		{"extra secret clashing", brokerMinimal, map[string]any{"extraSecrets": []any{map[string]any{"name": "store-dsn", "value": "x"}}}, `extraSecrets: name "store-dsn"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := render(t, brokerChart, tt.files, tt.set)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("render = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

// TestBrokerChartConfigKeys: every top-level key of the rendered config
// is a setting of 'broker serve' (read from internal/brokercli's
// serverConfig), so a typo in values.config fails here rather than at
// the broker's start.
func TestBrokerChartConfigKeys(t *testing.T) {
	known := jsonKeys(t, "../internal/brokercli/brokercli.go", "serverConfig")
	if !known["store_dsn"] || !known["identity"] {
		t.Fatalf("read %v from serverConfig: the parser lost its way", known)
	}
	for _, files := range [][]string{brokerMinimal, {"ci/full-values.yaml"}} {
		m := mustRender(t, brokerChart, files, nil)
		for k := range brokerConfig(t, one[corev1.ConfigMap](t, m).Data["broker.json"]) {
			if !known[k] {
				t.Errorf("%v: config key %q is no setting of 'broker serve'", files, k)
			}
		}
	}
}

func brokerConfig(t *testing.T, s string) map[string]any {
	t.Helper()
	var cfg map[string]any
	if err := json.Unmarshal([]byte(s), &cfg); err != nil {
		t.Fatalf("broker.json: %v\n%s", err, s)
	}
	return cfg
}

// fileRefs returns the PATH of every "file:PATH" string in the JSON s.
func fileRefs(s string) []string {
	var out []string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for _, x := range v {
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		case string:
			if p, ok := strings.CutPrefix(v, "file:"); ok {
				out = append(out, p)
			}
		}
	}
	var v any
	json.Unmarshal([]byte(s), &v)
	walk(v)
	return out
}

func envVar(c corev1.Container, name string) *corev1.EnvVar {
	for i := range c.Env {
		if c.Env[i].Name == name {
			return &c.Env[i]
		}
	}
	return nil
}

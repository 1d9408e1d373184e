package deploy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"helm.sh/helm/v4/pkg/chart/common"
	chartutil "helm.sh/helm/v4/pkg/chart/common/util"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/engine"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"
)

// manifest is the rendered chart: every object, decoded strictly into
// its Kubernetes API type.
type manifest struct {
	objects []object
}

// object is one rendered object.
type object struct {
	source string // the template it came from
	kind   string
	name   string
	obj    any // *appsv1.Deployment, *corev1.Secret, …
}

// kinds maps each kind a chart may render to its API type. A kind not
// listed fails the render: a chart that starts rendering something new
// gets a test for it.
var kinds = map[string]func() any{
	"apps/v1/Deployment":                 func() any { return new(appsv1.Deployment) },
	"apps/v1/StatefulSet":                func() any { return new(appsv1.StatefulSet) },
	"v1/Secret":                          func() any { return new(corev1.Secret) },
	"v1/ServiceAccount":                  func() any { return new(corev1.ServiceAccount) },
	"v1/PersistentVolumeClaim":           func() any { return new(corev1.PersistentVolumeClaim) },
	"v1/Service":                         func() any { return new(corev1.Service) },
	"v1/ConfigMap":                       func() any { return new(corev1.ConfigMap) },
	"networking.k8s.io/v1/NetworkPolicy": func() any { return new(networkingv1.NetworkPolicy) },
	"networking.k8s.io/v1/Ingress":       func() any { return new(networkingv1.Ingress) },
	"policy/v1/PodDisruptionBudget":      func() any { return new(policyv1.PodDisruptionBudget) },
}

var docSep = regexp.MustCompile(`(?m)^---[ \t]*$`)

// render renders the chart in dir with its own values.yaml overlaid by
// the values files named (paths relative to dir) and then by set, as
// 'helm template' would for release "tether" in namespace "tether".
func render(t *testing.T, dir string, files []string, set map[string]any) (*manifest, error) {
	t.Helper()
	chrt, err := loader.Load(dir)
	if err != nil {
		t.Fatalf("load chart %s: %v", dir, err)
	}
	vals := map[string]any{}
	for _, f := range files {
		v, err := common.ReadValuesFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatalf("values file %s: %v", f, err)
		}
		vals = chartutil.MergeTables(v, vals)
	}
	vals = mergeValues(vals, set)
	top, err := chartutil.ToRenderValues(chrt, vals, common.ReleaseOptions{Name: "tether", Namespace: "tether", IsInstall: true}, nil)
	if err != nil {
		return nil, fmt.Errorf("values: %w", err)
	}
	out, err := engine.Render(chrt, top)
	if err != nil {
		return nil, err
	}
	var names []string
	for name := range out {
		names = append(names, name)
	}
	sort.Strings(names)
	m := &manifest{}
	for _, name := range names {
		if strings.HasSuffix(name, "NOTES.txt") {
			continue
		}
		for _, doc := range docSep.Split(out[name], -1) {
			if strings.TrimSpace(stripComments(doc)) == "" {
				continue
			}
			o, err := decodeStrict(name, doc)
			if err != nil {
				return nil, err
			}
			m.objects = append(m.objects, o)
		}
	}
	return m, nil
}

// mustRender is render that fails the test on an error.
func mustRender(t *testing.T, dir string, files []string, set map[string]any) *manifest {
	t.Helper()
	m, err := render(t, dir, files, set)
	if err != nil {
		t.Fatalf("render %s %v %v: %v", dir, files, set, err)
	}
	return m
}

func stripComments(doc string) string {
	var b strings.Builder
	for _, line := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

// decodeStrict decodes one YAML document into its API type, refusing
// unknown and duplicate fields: a misspelt or misplaced field in a
// template is an error, not silently dropped as the API server would.
func decodeStrict(source, doc string) (object, error) {
	js, err := yaml.YAMLToJSONStrict([]byte(doc))
	if err != nil {
		return object{}, fmt.Errorf("%s: not YAML: %w\n%s", source, err, doc)
	}
	var meta struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name string `json:"name"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(js, &meta); err != nil {
		return object{}, fmt.Errorf("%s: %w", source, err)
	}
	mk, ok := kinds[meta.APIVersion+"/"+meta.Kind]
	if !ok {
		return object{}, fmt.Errorf("%s: %s %s is a kind these tests do not know", source, meta.APIVersion, meta.Kind)
	}
	obj := mk()
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(obj); err != nil {
		return object{}, fmt.Errorf("%s: %s %s: %w\n%s", source, meta.Kind, meta.Metadata.Name, err, doc)
	}
	return object{source: source, kind: meta.Kind, name: meta.Metadata.Name, obj: obj}, nil
}

// mergeValues sets each "a.b.c" path of set in vals.
func mergeValues(vals map[string]any, set map[string]any) map[string]any {
	for path, v := range set {
		m := vals
		parts := strings.Split(path, ".")
		for _, p := range parts[:len(parts)-1] {
			next, ok := m[p].(map[string]any)
			if !ok {
				next = map[string]any{}
				m[p] = next
			}
			m = next
		}
		m[parts[len(parts)-1]] = v
	}
	return vals
}

// all returns the objects of type T.
func all[T any](m *manifest) []*T {
	var out []*T
	for _, o := range m.objects {
		if v, ok := o.obj.(*T); ok {
			out = append(out, v)
		}
	}
	return out
}

// one returns the one object of type T, failing the test otherwise.
func one[T any](t *testing.T, m *manifest) *T {
	t.Helper()
	v := all[T](m)
	if len(v) != 1 {
		t.Fatalf("rendered %d objects of %T, want 1", len(v), new(T))
	}
	return v[0]
}

// readFile reads a file of the repository, relative to deploy/.
func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

package deploy

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"net/netip"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// TestClickHouseInstallationUsers: the ClickHouse operator's users section
// grants the agent's user exactly what users.d/tether.xml does: the same
// profile with the same settings, the same quota, the system database
// only, a password from a Secret (never inline), and networks narrower
// than everywhere.
func TestClickHouseInstallationUsers(t *testing.T) {
	x := parseXML(t, readFile(t, "clickhouse/users.d/tether.xml"))
	profileName := x.text("users/tether/profile")
	wantProfile := x.children("profiles/" + profileName)
	if len(wantProfile) < 5 {
		t.Fatalf("users.d/tether.xml: profile %q has %d settings: the parser lost its way", profileName, len(wantProfile))
	}

	var chi struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name      string `json:"name"`
			Namespace string `json:"namespace"`
		} `json:"metadata"`
		Spec struct {
			Configuration struct {
				Users    map[string]any `json:"users"`
				Profiles map[string]any `json:"profiles"`
			} `json:"configuration"`
		} `json:"spec"`
	}
	if err := yaml.UnmarshalStrict(readFile(t, "clickhouse/clickhouse-installation-users.yaml"), &chi); err != nil {
		t.Fatal(err)
	}
	if chi.APIVersion != "clickhouse.altinity.com/v1" || chi.Kind != "ClickHouseInstallation" {
		t.Errorf("%s %s, want a clickhouse.altinity.com/v1 ClickHouseInstallation", chi.APIVersion, chi.Kind)
	}

	gotProfile := map[string]string{}
	for k, v := range chi.Spec.Configuration.Profiles {
		name, setting, ok := strings.Cut(k, "/")
		if !ok || name != profileName {
			t.Errorf("profiles has %q: want only %s/SETTING", k, profileName)
			continue
		}
		gotProfile[setting] = scalar(v)
	}
	if !reflect.DeepEqual(gotProfile, wantProfile) {
		t.Errorf("profile %s = %v, users.d/tether.xml has %v", profileName, gotProfile, wantProfile)
	}

	users := map[string]any{}
	for k, v := range chi.Spec.Configuration.Users {
		user, setting, ok := strings.Cut(k, "/")
		if !ok || user != "tether" {
			t.Errorf("users has %q: want only tether/SETTING", k)
			continue
		}
		users[setting] = v
	}
	for setting, want := range map[string]any{
		"profile":                  profileName,
		"quota":                    x.text("users/tether/quota"),
		"allow_databases/database": []any{x.text("users/tether/allow_databases/database")},
	} {
		if !reflect.DeepEqual(users[setting], want) {
			t.Errorf("tether/%s = %#v, users.d/tether.xml has %#v", setting, users[setting], want)
		}
	}
	if ref, ok := users["k8s_secret_password"].(string); !ok || strings.Count(ref, "/") < 1 {
		if _, ok := users["k8s_secret_password_sha256_hex"]; !ok {
			t.Errorf("tether's password is %v: want k8s_secret_password (or _sha256_hex) naming SECRET/KEY", users["k8s_secret_password"])
		}
	}
	for _, inline := range []string{"password", "password_sha256_hex", "password_double_sha1_hex"} {
		if _, ok := users[inline]; ok {
			t.Errorf("tether/%s is inline: the password comes from a Secret", inline)
		}
	}
	nets, _ := users["networks/ip"].([]any)
	if len(nets) == 0 {
		t.Errorf("tether/networks/ip is empty: ClickHouse would accept the user from anywhere")
	}
	for _, n := range nets {
		p, err := netip.ParsePrefix(fmt.Sprint(n))
		if err != nil {
			a, aerr := netip.ParseAddr(fmt.Sprint(n))
			p, err = netip.PrefixFrom(a, a.BitLen()), aerr
		}
		if err != nil || p.Bits() == 0 {
			t.Errorf("tether/networks/ip %v: want the agent's addresses, never everywhere", n)
		}
	}
	delete(users, "networks/ip") // differs on purpose: loopback in the file, the agent's pods here
	for _, k := range []string{"profile", "quota", "allow_databases/database", "k8s_secret_password", "k8s_secret_password_sha256_hex"} {
		delete(users, k)
	}
	for k := range users {
		t.Errorf("tether/%s is not in users.d/tether.xml", k)
	}
}

// node is an XML element: its text and its children.
type node struct {
	name string
	body string
	kids []*node
}

func parseXML(t *testing.T, b []byte) *node {
	t.Helper()
	dec := xml.NewDecoder(bytes.NewReader(b))
	root := &node{}
	stack := []*node{root}
	for {
		tok, err := dec.Token()
		if err != nil {
			break
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			n := &node{name: tok.Name.Local}
			top := stack[len(stack)-1]
			top.kids = append(top.kids, n)
			stack = append(stack, n)
		case xml.EndElement:
			stack = stack[:len(stack)-1]
		case xml.CharData:
			stack[len(stack)-1].body += strings.TrimSpace(string(tok))
		}
	}
	if len(root.kids) != 1 {
		t.Fatalf("XML with %d root elements", len(root.kids))
	}
	return root.kids[0]
}

func (n *node) find(path string) *node {
	for _, p := range strings.Split(path, "/") {
		var next *node
		for _, c := range n.kids {
			if c.name == p {
				next = c
				break
			}
		}
		if next == nil {
			return nil
		}
		n = next
	}
	return n
}

func (n *node) text(path string) string {
	if f := n.find(path); f != nil {
		return f.body
	}
	return ""
}

// children returns the element at path's children as name → text.
func (n *node) children(path string) map[string]string {
	out := map[string]string{}
	if f := n.find(path); f != nil {
		for _, c := range f.kids {
			out[c.name] = c.body
		}
	}
	return out
}

// scalar formats a YAML scalar as the XML holds it: integers in digits.
func scalar(v any) string {
	if f, ok := v.(float64); ok {
		return strconv.FormatFloat(f, 'f', -1, 64)
	}
	return fmt.Sprint(v)
}

package netmgr

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"testing"
)

// rolePath is the CloudFormation template of the role, written in JSON
// (which is YAML too) so that this test can parse it with encoding/json:
// go.mod has no YAML library.
var rolePath = filepath.Join("..", "..", "deploy", "aws", "tether-network-role.yaml")

// stringOrList accepts the IAM policy forms "x" and ["x", "y"].
type stringOrList []string

func (s *stringOrList) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*s = []string{one}
		return nil
	}
	return json.Unmarshal(b, (*[]string)(s))
}

type statement struct {
	Effect    string
	Action    stringOrList
	Condition map[string]map[string]any
}

type template struct {
	Resources map[string]struct {
		Type       string
		Properties struct {
			AssumeRolePolicyDocument struct{ Statement []statement }
			Policies                 []struct {
				PolicyDocument struct{ Statement []statement }
			}
		}
	}
}

func TestRoleTemplateGrantsExactlyActions(t *testing.T) {
	b, err := os.ReadFile(rolePath)
	if err != nil {
		t.Fatal(err)
	}
	var tpl template
	if err := json.Unmarshal(b, &tpl); err != nil {
		t.Fatalf("parse %s as JSON (the template must stay JSON-compatible YAML): %v", rolePath, err)
	}
	var granted []string
	roles := 0
	for name, r := range tpl.Resources {
		if r.Type != "AWS::IAM::Role" {
			continue
		}
		roles++
		trust := r.Properties.AssumeRolePolicyDocument.Statement
		if len(trust) != 1 || trust[0].Condition["StringEquals"]["sts:ExternalId"] == nil {
			t.Errorf("role %s trust policy = %+v, want one statement with a StringEquals sts:ExternalId condition", name, trust)
		}
		for _, p := range r.Properties.Policies {
			for _, s := range p.PolicyDocument.Statement {
				if s.Effect != "Allow" {
					t.Errorf("role %s has a %q statement, want Allow only", name, s.Effect)
				}
				granted = append(granted, s.Action...)
			}
		}
	}
	if roles != 1 {
		t.Fatalf("%s has %d roles, want 1", rolePath, roles)
	}
	sort.Strings(granted)
	granted = slices.Compact(granted)
	if want := Actions(); !slices.Equal(granted, want) {
		for _, a := range want {
			if !slices.Contains(granted, a) {
				t.Errorf("template does not grant %s, which netmgr calls", a)
			}
		}
		for _, a := range granted {
			if !slices.Contains(want, a) {
				t.Errorf("template grants %s, which netmgr does not call", a)
			}
		}
	}

	lint, err := exec.LookPath("cfn-lint")
	if err != nil {
		t.Log("cfn-lint is not on PATH; skipping the lint of the template")
		return
	}
	if out, err := exec.Command(lint, rolePath).CombinedOutput(); err != nil {
		t.Errorf("cfn-lint %s: %v\n%s", rolePath, err, out)
	}
}

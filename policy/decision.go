package policy

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/tetherhq/tether/internal/names"
)

// maxDurationSeconds bounds max_duration_seconds so that it converts to a
// time.Duration without overflow; no grant should come near it.
const maxDurationSeconds = int64(math.MaxInt64 / int64(time.Second))

// decisionKeys are the keys the decision object must have, and the only
// ones: a misspelt key is a malformed decision, not an ignored one.
var decisionKeys = []string{"allow", "reasons", "required_reviews", "max_duration_seconds", "scopes"}

// parseDecision validates the policy's decision, as rego returns it, and
// converts it. Any deviation from the documented shape is [ErrMalformed].
func parseDecision(v any) (Decision, error) {
	obj, ok := v.(map[string]any)
	if !ok {
		return Decision{}, malformed("the decision is %s, not an object", kind(v))
	}
	for k := range obj {
		if !slices.Contains(decisionKeys, k) {
			return Decision{}, malformed("unknown key %q in the decision; it has exactly %s", k, strings.Join(decisionKeys, ", "))
		}
	}
	for _, k := range decisionKeys {
		if _, ok := obj[k]; !ok {
			return Decision{}, malformed("the decision has no %s", k)
		}
	}
	var d Decision
	if d.Allow, ok = obj["allow"].(bool); !ok {
		return Decision{}, malformed("allow is %s, not a boolean", kind(obj["allow"]))
	}
	var err error
	if d.Reasons, err = stringArray("reasons", obj["reasons"]); err != nil {
		return Decision{}, err
	}
	if !d.Allow && len(d.Reasons) == 0 {
		return Decision{}, malformed("a denial has no reasons; every denial must say what to do")
	}
	for i, r := range d.Reasons {
		if strings.TrimSpace(r) == "" {
			return Decision{}, malformed("reasons[%d] is empty", i)
		}
	}
	if d.Scopes, err = stringArray("scopes", obj["scopes"]); err != nil {
		return Decision{}, err
	}
	secs, err := integer("max_duration_seconds", obj["max_duration_seconds"])
	if err != nil {
		return Decision{}, err
	}
	if secs <= 0 || secs > maxDurationSeconds {
		return Decision{}, malformed("max_duration_seconds is %d, want 1 to %d", secs, maxDurationSeconds)
	}
	d.MaxDurationSeconds = secs
	d.MaxDuration = time.Duration(secs) * time.Second

	reviews, ok := obj["required_reviews"].([]any)
	if !ok {
		return Decision{}, malformed("required_reviews is %s, not an array", kind(obj["required_reviews"]))
	}
	d.RequiredReviews = make([]Review, 0, len(reviews))
	for i, rv := range reviews {
		r, err := parseReview(i, rv)
		if err != nil {
			return Decision{}, err
		}
		d.RequiredReviews = append(d.RequiredReviews, r)
	}
	return d, nil
}

func parseReview(i int, v any) (Review, error) {
	obj, ok := v.(map[string]any)
	if !ok {
		return Review{}, malformed("required_reviews[%d] is %s, not an object", i, kind(v))
	}
	for k := range obj {
		if k != "tenant" && k != "role" && k != "count" {
			return Review{}, malformed("unknown key %q in required_reviews[%d]; a review has exactly tenant, role, count", k, i)
		}
	}
	var r Review
	if r.Tenant, ok = obj["tenant"].(string); !ok {
		return Review{}, malformed("required_reviews[%d].tenant is %s, not a string", i, kind(obj["tenant"]))
	}
	if r.Role, ok = obj["role"].(string); !ok {
		return Review{}, malformed("required_reviews[%d].role is %s, not a string", i, kind(obj["role"]))
	}
	switch {
	case r.Role == names.ReviewApprover && r.Tenant == "":
		return Review{}, malformed("required_reviews[%d] asks for approvers of no tenant; name the deployment's tenant", i)
	case r.Role == names.ReviewInternal && r.Tenant != "":
		return Review{}, malformed("required_reviews[%d] asks for internal reviewers of tenant %q; internal reviews have tenant \"\"", i, r.Tenant)
	case r.Role != names.ReviewApprover && r.Role != names.ReviewInternal:
		return Review{}, malformed("required_reviews[%d].role is %q, want %q or %q", i, r.Role, names.ReviewApprover, names.ReviewInternal)
	}
	n, err := integer(fmt.Sprintf("required_reviews[%d].count", i), obj["count"])
	if err != nil {
		return Review{}, err
	}
	if n < 1 || n > math.MaxInt32 {
		return Review{}, malformed("required_reviews[%d].count is %d, want at least 1", i, n)
	}
	r.Count = int(n)
	return r, nil
}

// stringArray converts an array of strings; a null or missing array is not
// one.
func stringArray(name string, v any) ([]string, error) {
	arr, ok := v.([]any)
	if !ok {
		return nil, malformed("%s is %s, not an array of strings", name, kind(v))
	}
	out := make([]string, 0, len(arr))
	for i, e := range arr {
		s, ok := e.(string)
		if !ok {
			return nil, malformed("%s[%d] is %s, not a string", name, i, kind(e))
		}
		out = append(out, s)
	}
	return out, nil
}

// integer converts a JSON integer; 3600.0 is one, 3600.5 is not.
func integer(name string, v any) (int64, error) {
	var f float64
	switch n := v.(type) {
	case json.Number:
		if i, err := n.Int64(); err == nil {
			return i, nil
		}
		var err error
		if f, err = n.Float64(); err != nil {
			return 0, malformed("%s is %s, not an integer", name, n)
		}
	case float64:
		f = n
	case int:
		return int64(n), nil
	case int64:
		return n, nil
	default:
		return 0, malformed("%s is %s, not a number", name, kind(v))
	}
	if f != math.Trunc(f) || f < math.MinInt64 || f >= math.MaxInt64 {
		return 0, malformed("%s is %v, not an integer", name, f)
	}
	return int64(f), nil
}

func kind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case string:
		return "a string"
	case json.Number, float64, int, int64:
		return "a number"
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	default:
		return fmt.Sprintf("a %T", v)
	}
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), ErrMalformed)
}

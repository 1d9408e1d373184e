package promguard

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// MaxAnswer bounds an answer the agent rewrites: it reads at most
// MaxAnswer+1 bytes of it and refuses a longer one rather than pass any of
// it on unrewritten. 8 MiB holds about 17,000 targets; rewriting takes
// about 12 bytes of memory per byte of answer and runs at about 25 MB/s.
const MaxAnswer = 8 << 20

// Withheld replaces a value an answer may not carry, such as a target's
// lastError or an alert's annotations.
const Withheld = "withheld by the agent"

// ErrAnswer is wrapped by every error of [Rewrite]: the answer was not
// passed on.
var ErrAnswer = errors.New("prometheus answer withheld")

// Rewrite rewrites Prometheus's answer body to a call to endpoint (the
// [Verdict.Endpoint] of a call whose [Verdict.Rewrite] is set) so that it
// carries nothing of the configuration that may hold secrets; the package
// documentation says what each endpoint loses. Only the fields the guard
// knows are kept: a field Prometheus adds in a later release is dropped
// until it is reviewed. An answer that is not the JSON Prometheus sends,
// or is over [MaxAnswer] bytes, is an error, never passed through.
// Rewrite returns the body unchanged for an endpoint whose answers need no
// rewriting.
func Rewrite(endpoint string, body []byte) ([]byte, error) {
	var rw func(json.RawMessage) (any, error)
	if ep := endpoints[endpoint]; ep != nil {
		rw = ep.answer
	} else if endpoint != labelValues.pattern {
		return nil, fmt.Errorf("%w: %q is not an allowed endpoint", ErrAnswer, endpoint)
	}
	if rw == nil {
		return body, nil
	}
	if len(body) > MaxAnswer {
		return nil, fmt.Errorf("%w: the answer to %s is over %d bytes: narrow the call (scrapePool=, state=active, match[]=, group_limit=)", ErrAnswer, endpoint, MaxAnswer)
	}
	var env struct {
		Status    string          `json:"status"`
		Data      json.RawMessage `json:"data"`
		ErrorType string          `json:"errorType"`
		Error     string          `json:"error"`
		Warnings  []string        `json:"warnings"`
		Infos     []string        `json:"infos"`
	}
	if err := decodeStrict(body, &env); err != nil {
		return nil, fmt.Errorf("%w: the answer to %s is not Prometheus's JSON: %v", ErrAnswer, endpoint, err)
	}
	out := struct {
		Status    string   `json:"status"`
		Data      any      `json:"data,omitempty"`
		ErrorType string   `json:"errorType,omitempty"`
		Error     string   `json:"error,omitempty"`
		Warnings  []string `json:"warnings,omitempty"`
		Infos     []string `json:"infos,omitempty"`
	}{Status: env.Status, Warnings: env.Warnings, Infos: env.Infos}
	switch env.Status {
	case "success":
		data, err := rw(env.Data)
		if err != nil {
			return nil, fmt.Errorf("%w: the answer to %s is not the JSON Prometheus sends: %v", ErrAnswer, endpoint, err)
		}
		out.Data = data
	case "error":
		// The errors of these endpoints are about the call's
		// parameters; the data an error answer may carry is dropped.
		out.ErrorType, out.Error = env.ErrorType, env.Error
	default:
		return nil, fmt.Errorf("%w: the answer to %s has a status other than success or error", ErrAnswer, endpoint)
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(out); err != nil {
		return nil, fmt.Errorf("%w: encode the rewritten answer to %s: %v", ErrAnswer, endpoint, err)
	}
	return b.Bytes(), nil
}

// decodeStrict decodes exactly one JSON value from b into v.
func decodeStrict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("data after the JSON value")
	}
	return nil
}

// decodeData decodes an answer's data, which must be present.
func decodeData[T any](raw json.RawMessage) (*T, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, errors.New("no data")
	}
	v := new(T)
	if err := decodeStrict(raw, v); err != nil {
		return nil, err
	}
	return v, nil
}

// scalar is a JSON string, number, boolean or null, passed on as it came.
// Objects and arrays, which could carry anything, are refused.
type scalar json.RawMessage

func (s *scalar) UnmarshalJSON(b []byte) error {
	if len(b) == 0 || b[0] == '{' || b[0] == '[' {
		return errors.New("want a string, number, boolean or null")
	}
	*s = append((*s)[:0], b...)
	return nil
}

func (s scalar) MarshalJSON() ([]byte, error) {
	if len(s) == 0 {
		return []byte("null"), nil
	}
	return s, nil
}

// empty is an object whose contents are dropped: it reads any object and
// writes {}.
type empty struct{}

// labelSet is a set of target or rule labels, cleaned as it is decoded:
// labels whose name starts with __ (such as __param_token or
// __address__) are dropped, and values lose user-info and query strings
// (see cleanValue).
type labelSet map[string]string

func (l *labelSet) UnmarshalJSON(b []byte) error {
	var m map[string]string
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	out := make(labelSet, len(m))
	for k, v := range m {
		if strings.HasPrefix(k, "__") {
			continue
		}
		out[k] = cleanValue(v)
	}
	*l = out
	return nil
}

// MarshalJSON writes a missing set as {}, as Prometheus does.
func (l labelSet) MarshalJSON() ([]byte, error) {
	if l == nil {
		return []byte("{}"), nil
	}
	return json.Marshal(map[string]string(l))
}

// withheldSet is a set of annotations: the names are kept, every value is
// withheld. Annotations are free text written by whoever wrote the rules,
// often with links, and templates can quote label values.
type withheldSet map[string]string

func (w *withheldSet) UnmarshalJSON(b []byte) error {
	var m map[string]string
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	out := make(withheldSet, len(m))
	for k := range m {
		out[k] = Withheld
	}
	*w = out
	return nil
}

// MarshalJSON writes a missing set as {}, as Prometheus does.
func (w withheldSet) MarshalJSON() ([]byte, error) {
	if w == nil {
		return []byte("{}"), nil
	}
	return json.Marshal(map[string]string(w))
}

// withheldText is free text, such as an error, that may quote a URL, a
// response or a secret: empty stays empty, anything else is withheld.
type withheldText string

func (w *withheldText) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	*w = ""
	if s != "" {
		*w = Withheld
	}
	return nil
}

// cleanURLText is a URL that loses its user-info, query and fragment.
type cleanURLText string

func (u *cleanURLText) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	*u = cleanURLText(cleanURL(s))
	return nil
}

// cleanURL drops the user-info, query string and fragment of a URL such as
// a scrape URL, which carry credentials and the params: of a scrape
// configuration. It works on the text rather than on a parsed URL: a
// scrape URL need not parse (Prometheus writes user-info in an address
// as %40), and a text it cannot read as scheme://authority/path is
// withheld whole.
func cleanURL(s string) string {
	if s == "" {
		return ""
	}
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok || !isScheme(scheme) {
		return Withheld
	}
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	host, path := dropUserinfo(rest[:end]), rest[end:]
	if i := strings.IndexAny(path, "?#"); i >= 0 {
		path = path[:i]
	}
	return scheme + "://" + host + path
}

// dropUserinfo drops what comes before the last @ (or %40, its escape) of
// an authority or address such as user:pw@host:9100.
func dropUserinfo(s string) string {
	i, n := strings.LastIndexByte(s, '@'), 1
	if j := strings.LastIndex(s, "%40"); j > i {
		i, n = j, 3
	}
	if i < 0 {
		return s
	}
	return s[i+n:]
}

func isScheme(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || i > 0 && ('0' <= c && c <= '9' || c == '+' || c == '-' || c == '.')) {
			return false
		}
	}
	return true
}

// cleanValue cleans a label value of a target or rule: a URL (as a
// blackbox exporter's target often is) loses its user-info and query
// string, and an address such as user:pw@host:9100 its user-info.
func cleanValue(v string) string {
	if strings.Contains(v, "://") {
		return cleanURL(v)
	}
	return dropUserinfo(v)
}

// The answers of the endpoints that are rewritten, with only the fields
// the guard reviewed. Prometheus's own names and shapes: see
// web/api/v1/api.go in its source.

type targetsAnswer struct {
	ActiveTargets       []activeTarget    `json:"activeTargets"`
	DroppedTargets      []droppedTarget   `json:"droppedTargets"`
	DroppedTargetCounts map[string]scalar `json:"droppedTargetCounts,omitempty"`
}

type activeTarget struct {
	DiscoveredLabels   empty        `json:"discoveredLabels"`
	Labels             labelSet     `json:"labels"`
	ScrapePool         scalar       `json:"scrapePool"`
	ScrapeURL          cleanURLText `json:"scrapeUrl"`
	GlobalURL          cleanURLText `json:"globalUrl,omitempty"`
	LastError          withheldText `json:"lastError"`
	LastScrape         scalar       `json:"lastScrape,omitempty"`
	LastScrapeDuration scalar       `json:"lastScrapeDuration,omitempty"`
	Health             scalar       `json:"health"`
	ScrapeInterval     scalar       `json:"scrapeInterval,omitempty"`
	ScrapeTimeout      scalar       `json:"scrapeTimeout,omitempty"`
}

type droppedTarget struct {
	DiscoveredLabels empty  `json:"discoveredLabels"`
	ScrapePool       scalar `json:"scrapePool,omitempty"`
}

func rewriteTargets(raw json.RawMessage) (any, error) {
	d, err := decodeData[targetsAnswer](raw)
	if err != nil {
		return nil, err
	}
	if d.ActiveTargets == nil {
		d.ActiveTargets = []activeTarget{}
	}
	if d.DroppedTargets == nil {
		d.DroppedTargets = []droppedTarget{}
	}
	return d, nil
}

type targetMetadata struct {
	Target labelSet `json:"target"`
	Metric scalar   `json:"metric,omitempty"`
	Type   scalar   `json:"type"`
	Help   scalar   `json:"help"`
	Unit   scalar   `json:"unit"`
}

func rewriteTargetsMetadata(raw json.RawMessage) (any, error) {
	d, err := decodeData[[]targetMetadata](raw)
	if err != nil {
		return nil, err
	}
	if *d == nil {
		*d = []targetMetadata{}
	}
	return d, nil
}

type alert struct {
	Labels          labelSet    `json:"labels"`
	Annotations     withheldSet `json:"annotations"`
	State           scalar      `json:"state"`
	ActiveAt        scalar      `json:"activeAt,omitempty"`
	KeepFiringSince scalar      `json:"keepFiringSince,omitempty"`
	Value           scalar      `json:"value"`
}

type rule struct {
	State          scalar       `json:"state,omitempty"`
	Name           scalar       `json:"name"`
	Query          scalar       `json:"query"`
	Duration       scalar       `json:"duration,omitempty"`
	KeepFiringFor  scalar       `json:"keepFiringFor,omitempty"`
	Labels         labelSet     `json:"labels"`
	Annotations    *withheldSet `json:"annotations,omitempty"`
	Alerts         *[]alert     `json:"alerts,omitempty"`
	Health         scalar       `json:"health"`
	LastError      withheldText `json:"lastError,omitempty"`
	EvaluationTime scalar       `json:"evaluationTime"`
	LastEvaluation scalar       `json:"lastEvaluation"`
	Type           scalar       `json:"type"`
}

type ruleGroup struct {
	Name           scalar `json:"name"`
	File           scalar `json:"file"`
	Rules          []rule `json:"rules"`
	Interval       scalar `json:"interval"`
	Limit          scalar `json:"limit,omitempty"`
	EvaluationTime scalar `json:"evaluationTime"`
	LastEvaluation scalar `json:"lastEvaluation"`
}

type rulesAnswer struct {
	Groups         []ruleGroup `json:"groups"`
	GroupNextToken scalar      `json:"groupNextToken,omitempty"`
}

func rewriteRules(raw json.RawMessage) (any, error) {
	d, err := decodeData[rulesAnswer](raw)
	if err != nil {
		return nil, err
	}
	if d.Groups == nil {
		d.Groups = []ruleGroup{}
	}
	for i := range d.Groups {
		if d.Groups[i].Rules == nil {
			d.Groups[i].Rules = []rule{}
		}
	}
	return d, nil
}

type alertsAnswer struct {
	Alerts []alert `json:"alerts"`
}

func rewriteAlerts(raw json.RawMessage) (any, error) {
	d, err := decodeData[alertsAnswer](raw)
	if err != nil {
		return nil, err
	}
	if d.Alerts == nil {
		d.Alerts = []alert{}
	}
	return d, nil
}

package promguard

import (
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

// kind is how a parameter's value is parsed and rebuilt.
type kind int

const (
	kindExpr     kind = iota // a PromQL expression
	kindSelector             // a series selector, such as up{job="api"}
	kindTime                 // RFC 3339 or unix seconds; sent as unix seconds
	kindStep                 // a duration or float seconds, > 0; sent as a duration
	kindTimeout              // a duration or float seconds, ≤ MaxTimeout
	kindCount                // a non-negative integer
	kindEnum                 // one of spec.enum
	kindText                 // free text up to maxText bytes
)

type paramSpec struct {
	kind  kind
	multi bool     // may repeat, as match[]
	enum  []string // values of a kindEnum
}

// endpoint is one allowed API endpoint and the parameters it accepts.
type endpoint struct {
	pattern  string
	post     bool // POST is allowed besides GET
	params   map[string]paramSpec
	required []string
	query    bool // takes a timeout, given MaxTimeout when it sets none
	rangeQ   bool // a range query: start, end and step are bounded together
	// answer rewrites the data of a successful answer, for endpoints
	// that echo configuration (see Rewrite); nil passes answers through.
	answer func(json.RawMessage) (any, error)
}

var (
	pTime     = paramSpec{kind: kindTime}
	pCount    = paramSpec{kind: kindCount}
	pText     = paramSpec{kind: kindText}
	pTexts    = paramSpec{kind: kindText, multi: true}
	pExpr     = paramSpec{kind: kindExpr}
	pMatch    = paramSpec{kind: kindSelector, multi: true}
	pStats    = paramSpec{kind: kindEnum, enum: []string{"all", "true", "1"}}
	pTimeout  = paramSpec{kind: kindTimeout}
	labelsPar = map[string]paramSpec{"match[]": pMatch, "start": pTime, "end": pTime, "limit": pCount}
)

// labelValues is /api/v1/label/{name}/values, matched apart from the
// fixed paths.
var labelValues = &endpoint{pattern: "/api/v1/label/{name}/values", params: labelsPar}

// endpoints are the allowed fixed paths, with the parameters Prometheus
// documents for each; anything else is refused.
var endpoints = map[string]*endpoint{
	"/api/v1/query": {post: true, query: true, required: []string{"query"}, params: map[string]paramSpec{
		"query": pExpr, "time": pTime, "timeout": pTimeout, "limit": pCount, "stats": pStats,
	}},
	"/api/v1/query_range": {post: true, query: true, rangeQ: true, required: []string{"query", "start", "end", "step"}, params: map[string]paramSpec{
		"query": pExpr, "start": pTime, "end": pTime, "step": {kind: kindStep}, "timeout": pTimeout, "limit": pCount, "stats": pStats,
	}},
	"/api/v1/query_exemplars": {post: true, required: []string{"query"}, params: map[string]paramSpec{
		"query": pExpr, "start": pTime, "end": pTime,
	}},
	"/api/v1/series": {post: true, required: []string{"match[]"}, params: labelsPar},
	"/api/v1/labels": {post: true, params: labelsPar},
	"/api/v1/metadata": {params: map[string]paramSpec{
		"limit": pCount, "limit_per_metric": pCount, "metric": pText,
	}},
	"/api/v1/targets": {answer: rewriteTargets, params: map[string]paramSpec{
		"state": {kind: kindEnum, enum: []string{"active", "dropped", "any"}}, "scrapePool": pText,
	}},
	"/api/v1/targets/metadata": {answer: rewriteTargetsMetadata, params: map[string]paramSpec{
		"match_target": {kind: kindSelector}, "metric": pText, "limit": pCount,
	}},
	"/api/v1/rules": {answer: rewriteRules, params: map[string]paramSpec{
		"type": {kind: kindEnum, enum: []string{"alert", "record"}}, "rule_name[]": pTexts, "rule_group[]": pTexts, "file[]": pTexts,
		"exclude_alerts": {kind: kindEnum, enum: []string{"true", "false"}}, "match[]": pMatch,
		"group_limit": pCount, "group_next_token": pText,
	}},
	"/api/v1/alerts":             {answer: rewriteAlerts},
	"/api/v1/status/buildinfo":   {},
	"/api/v1/status/runtimeinfo": {},
	"/api/v1/status/tsdb":        {params: map[string]paramSpec{"limit": pCount}},
}

func init() {
	for p, ep := range endpoints {
		ep.pattern = p
	}
}

// allowedPatterns lists the allowed endpoints, for reasons.
func allowedPatterns() []string {
	return append(slices.Sorted(maps.Keys(endpoints)), labelValues.pattern)
}

// promql parses with the default options: no experimental functions and
// no unquoted UTF-8 names.
var promql = parser.NewParser(parser.Options{})

// call gathers the checked parameters of one call.
type call struct {
	ep         *endpoint
	values     url.Values
	expr       parser.Expr
	start, end int64 // milliseconds, when hasStart, hasEnd
	hasStart   bool
	hasEnd     bool
	step       time.Duration
	regexCost  int64 // estimated, of the call's PromQL and selectors
}

// add checks one parameter and records its rebuilt value.
func (c *call) add(k, v string) string {
	spec, ok := c.ep.params[k]
	if !ok {
		if len(c.ep.params) == 0 {
			return fmt.Sprintf("%s takes no parameters, got %q", c.ep.pattern, printable(k))
		}
		return fmt.Sprintf("parameter %q is not accepted by %s; accepted: %s", printable(k), c.ep.pattern, strings.Join(slices.Sorted(maps.Keys(c.ep.params)), ", "))
	}
	if n := len(c.values[k]); n > 0 && !spec.multi {
		return fmt.Sprintf("parameter %q is given more than once: give it once", k)
	} else if n == MaxMatchers {
		return fmt.Sprintf("parameter %q is given over %d times", k, MaxMatchers)
	}
	if v == "" {
		return fmt.Sprintf("parameter %q is empty: give a value or leave it out", k)
	}
	out := v
	switch spec.kind {
	case kindExpr:
		if len(v) > MaxQueryLen {
			return fmt.Sprintf("the query is %d bytes, over the %d-byte limit", len(v), MaxQueryLen)
		}
		if reason := c.precheck(v); reason != "" {
			return reason
		}
		expr, reason := parseExpr(v)
		if reason != "" {
			return reason
		}
		c.expr = expr
	case kindSelector:
		if len(v) > MaxQueryLen {
			return fmt.Sprintf("%s is %d bytes, over the %d-byte limit", k, len(v), MaxQueryLen)
		}
		if reason := c.precheck(v); reason != "" {
			return reason
		}
		ms, err := promql.ParseMetricSelector(v)
		if err != nil {
			return fmt.Sprintf("%s %q is not a series selector such as up{job=\"api\"}: %v", k, printable(v), err)
		}
		// As Prometheus requires: a selector that matches the empty
		// string with every matcher would select every series.
		if !slices.ContainsFunc(ms, func(m *labels.Matcher) bool { return !m.Matches("") }) {
			return fmt.Sprintf("%s %q selects every series: give at least one matcher that does not match the empty string, such as a metric name", k, printable(v))
		}
	case kindTime:
		ms, reason := parseTime(k, v)
		if reason != "" {
			return reason
		}
		switch k {
		case "start":
			c.start, c.hasStart = ms, true
		case "end":
			c.end, c.hasEnd = ms, true
		}
		out = formatTime(ms)
	case kindStep, kindTimeout:
		d, reason := parseDuration(k, v)
		if reason != "" {
			return reason
		}
		switch {
		case spec.kind == kindStep && d > MaxRange:
			return fmt.Sprintf("step %s is over the %s limit", model.Duration(d), model.Duration(MaxRange))
		case spec.kind == kindTimeout && d > MaxTimeout:
			return fmt.Sprintf("timeout %s is over the %s limit: ask for %s or less", model.Duration(d), model.Duration(MaxTimeout), model.Duration(MaxTimeout))
		}
		if spec.kind == kindStep {
			c.step = d
		}
		out = model.Duration(d).String()
	case kindCount:
		n, err := strconv.ParseUint(v, 10, 31)
		if err != nil {
			return fmt.Sprintf("%s %q is not a whole number from 0 to %d", k, printable(v), math.MaxInt32)
		}
		out = strconv.FormatUint(n, 10)
	case kindEnum:
		if !slices.Contains(spec.enum, v) {
			return fmt.Sprintf("%s %q is not allowed: want one of %s", k, printable(v), strings.Join(spec.enum, ", "))
		}
	case kindText:
		if len(v) > maxText {
			return fmt.Sprintf("%s is %d bytes, over the %d-byte limit", k, len(v), maxText)
		}
	}
	c.values[k] = append(c.values[k], out)
	return ""
}

// precheck counts the regular expressions of PromQL text v against
// the call's bound, and bounds its nesting, before the parser runs.
func (c *call) precheck(v string) string {
	cost, depth := scan(v)
	if depth > maxDepth {
		return fmt.Sprintf("parentheses nest %d deep, over the limit of %d", depth, maxDepth)
	}
	c.regexCost += cost
	if c.regexCost > maxRegexCost {
		return fmt.Sprintf("the regular expressions of the call are too large once compiled (an estimated %d instructions, over the limit of %d): use fewer or smaller counted repetitions such as {1000}", c.regexCost, maxRegexCost)
	}
	return ""
}

// finish applies the rules that span parameters.
func (c *call) finish() string {
	for _, k := range c.ep.required {
		if len(c.values[k]) == 0 {
			return fmt.Sprintf("%s needs parameter %q", c.ep.pattern, k)
		}
	}
	if c.hasStart && c.hasEnd {
		if c.end < c.start {
			return fmt.Sprintf("end %s is before start %s", formatTime(c.end), formatTime(c.start))
		}
		if d := time.Duration(c.end-c.start) * time.Millisecond; d > MaxRange {
			return fmt.Sprintf("the range from start to end is %s, over the %s limit: narrow it", model.Duration(d), model.Duration(MaxRange))
		}
	}
	evals := int64(1)
	if c.ep.rangeQ {
		step := c.step.Milliseconds()
		evals = (c.end-c.start)/step + 1
		if evals > MaxPoints {
			return fmt.Sprintf("%d points per series (range / step + 1) is over the %d limit: raise step to at least %s",
				evals, MaxPoints, model.Duration(time.Duration((c.end-c.start)/MaxPoints+1)*time.Millisecond))
		}
		if t := c.expr.Type(); t != parser.ValueTypeVector && t != parser.ValueTypeScalar {
			return fmt.Sprintf("a range query must give an instant vector or a scalar, and this one gives a %s: drop the [range] or query /api/v1/query", t)
		}
	}
	if c.ep.query {
		if reason := checkCost(c.expr, evals, c.ep.rangeQ); reason != "" {
			return reason
		}
	}
	if c.ep.query && len(c.values["timeout"]) == 0 {
		c.values.Set("timeout", model.Duration(MaxTimeout).String())
	}
	return ""
}

// parseExpr parses a PromQL expression and bounds what it may select:
// range selectors and subqueries span at most MaxRange, and subqueries
// produce at most MaxPoints points. Durations must be literals so that the
// bounds are known before Prometheus evaluates anything.
func parseExpr(q string) (parser.Expr, string) {
	expr, err := promql.ParseExpr(q)
	if err != nil {
		return nil, fmt.Sprintf("the query is not valid PromQL: %v", err)
	}
	var reason string
	parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
		switch n := n.(type) {
		case *parser.VectorSelector:
			if n.OriginalOffsetExpr != nil {
				reason = "computed offsets are not allowed: write the offset as a literal duration, such as offset 1h"
			}
		case *parser.MatrixSelector:
			switch {
			case n.RangeExpr != nil:
				reason = "computed ranges are not allowed: write the range as a literal duration, such as [5m]"
			case n.Range > MaxRange:
				reason = fmt.Sprintf("range selector [%s] is over the %s limit", model.Duration(n.Range), model.Duration(MaxRange))
			}
		case *parser.SubqueryExpr:
			switch {
			case n.RangeExpr != nil || n.StepExpr != nil || n.OriginalOffsetExpr != nil:
				reason = "computed subquery ranges, steps and offsets are not allowed: write them as literal durations, such as [1h:1m]"
			case n.Range > MaxRange:
				reason = fmt.Sprintf("subquery range [%s] is over the %s limit", model.Duration(n.Range), model.Duration(MaxRange))
			case n.Step > 0 && n.Range/n.Step > MaxPoints:
				reason = fmt.Sprintf("subquery [%s:%s] makes over %d points: raise its step", model.Duration(n.Range), model.Duration(n.Step), MaxPoints)
			}
		}
		if reason != "" {
			return errStop
		}
		return nil
	})
	if reason != "" {
		return nil, reason
	}
	return expr, ""
}

type stopError struct{}

func (stopError) Error() string { return "stop" }

var errStop error = stopError{}

// Times are accepted from 1970 to the end of 9999, in milliseconds, the
// precision of Prometheus's timestamps.
const maxTime = 253402300799999

// parseTime parses a time as Prometheus does, RFC 3339 or unix seconds
// (fractions allowed), to unix milliseconds.
func parseTime(k, v string) (int64, string) {
	var ms int64
	if f, err := strconv.ParseFloat(v, 64); err == nil {
		if math.IsNaN(f) || f < 0 || f*1000 > maxTime {
			return 0, fmt.Sprintf("%s %q is out of range: want a time from 1970 to 9999", k, printable(v))
		}
		ms = int64(math.Round(f * 1000))
	} else if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		// Truncation to the millisecond, as Prometheus does.
		ms = t.Unix()*1000 + int64(t.Nanosecond())/1e6
		if t.Unix() < 0 || ms > maxTime {
			return 0, fmt.Sprintf("%s %q is out of range: want a time from 1970 to 9999", k, printable(v))
		}
	} else {
		return 0, fmt.Sprintf("%s %q is not a time: want RFC 3339, such as 2025-01-02T15:04:05Z, or unix seconds, such as 1735830245.5", k, printable(v))
	}
	return ms, ""
}

func formatTime(ms int64) string {
	if ms%1000 == 0 {
		return strconv.FormatInt(ms/1000, 10)
	}
	return fmt.Sprintf("%d.%03d", ms/1000, ms%1000)
}

// parseDuration parses a duration as Prometheus does, float seconds or a
// duration such as 1m30s, and requires a whole, positive number of
// milliseconds: Prometheus evaluates at millisecond steps, and a
// sub-millisecond step would be a zero one.
func parseDuration(k, v string) (time.Duration, string) {
	var d time.Duration
	if f, err := strconv.ParseFloat(v, 64); err == nil {
		ms := f * 1000
		r := math.Round(ms)
		switch {
		case math.IsNaN(f) || f <= 0:
			return 0, fmt.Sprintf("%s %q must be positive", k, printable(v))
		case f > MaxRange.Seconds():
			return 0, fmt.Sprintf("%s %q is over the %s limit", k, printable(v), model.Duration(MaxRange))
		case math.Abs(ms-r) > 1e-6:
			return 0, fmt.Sprintf("%s %q is not a whole number of milliseconds", k, printable(v))
		}
		d = time.Duration(r) * time.Millisecond
	} else if md, err := model.ParseDuration(v); err == nil {
		d = time.Duration(md)
		if d <= 0 {
			return 0, fmt.Sprintf("%s %q must be positive", k, printable(v))
		}
	} else {
		return 0, fmt.Sprintf("%s %q is not a duration: want one such as 30s or 1m30s, or seconds such as 15", k, printable(v))
	}
	return d, ""
}

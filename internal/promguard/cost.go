package promguard

import (
	"fmt"
	"math"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/promql/parser"
)

// MaxSamples bounds the estimated work of a whole query, counted per
// series: the samples Prometheus reads and the steps it evaluates, over
// every evaluation of every part of the expression. The package
// documentation says how it is counted.
//
// At one sample per [AssumedScrapeInterval] it lets through a month's
// range query at a 5m step over rate(x[1d]) (≈ 51 million; 90 ms of
// Prometheus 2.42's CPU for one series of 34 days scraped every 15s) and
// refuses the same query over max_over_time(x[7d]) (≈ 360 million; 0.5 s)
// or max_over_time(x[31d]) (≈ 1.6 billion; 0.85 s), and any second level
// of month-long subqueries at a 5m step (≈ 1.6 billion). Prometheus
// shares the work of a subquery between the steps of the expression
// around it, so nested subqueries cost it less than the estimate says
// (three levels of [31d:5m] over a max_over_time(x[31d]) took 1.1 s);
// the estimate does not count on that, as other engines may not share.
const MaxSamples = 100_000_000

// AssumedScrapeInterval is the scrape interval the estimate of [MaxSamples]
// assumes: a range selector [r] counts r/AssumedScrapeInterval samples.
// Prometheus's default is 1m and most deployments scrape every 15s or
// 30s. The guard cannot know a series' interval, so it assumes a short one
// and errs towards counting more. A subquery without a step ([1h:]) is
// counted as if its step were this interval too: its real step is the
// server's evaluation interval, 1m by default.
const AssumedScrapeInterval = 15 * time.Second

// costLimit keeps the saturating arithmetic far from overflow and far
// above MaxSamples.
const costLimit = math.MaxInt64 / 4

func satMul(a, b int64) int64 {
	if a == 0 || b == 0 {
		return 0
	}
	if a > costLimit/b {
		return costLimit
	}
	return a * b
}

func satAdd(a, b int64) int64 {
	return min(a+b, costLimit) // each ≤ costLimit: no overflow
}

// ceilDiv is ⌈a/b⌉ for positive durations, at least 1.
func ceilDiv(a, b time.Duration) int64 {
	return max(1, int64((a+b-1)/b))
}

// estimate is the estimated work of an expression, and the part of it
// that weighs most, for the reason a refused query is given.
type estimate struct {
	total      int64
	heaviest   parser.Node
	heavyCost  int64
	heavyEvals int64 // how many times the heaviest part is evaluated
}

func (e *estimate) add(n parser.Node, evals, cost int64) {
	e.total = satAdd(e.total, cost)
	if cost > e.heavyCost {
		e.heaviest, e.heavyCost, e.heavyEvals = n, cost, evals
	}
}

// estimateCost estimates, per series, the samples Prometheus reads and the
// steps it evaluates to answer expr evaluated at evals timestamps (1 for
// an instant query, the points of a range query).
//
// A vector selector reads about one sample per evaluation; a range
// selector [r] reads r/AssumedScrapeInterval per evaluation; a subquery
// [R:S] evaluates its inner expression R/S times per evaluation of its own,
// and whatever function takes it reads those R/S points. Nested
// subqueries multiply. Prometheus shares some of that work between steps,
// and other engines (Thanos) less so: the estimate is an upper bound that
// does not depend on one engine's optimisations.
func estimateCost(expr parser.Node, evals int64) estimate {
	var e estimate
	e.walk(expr, evals)
	return e
}

func (e *estimate) walk(n parser.Node, evals int64) {
	switch n := n.(type) {
	case *parser.VectorSelector:
		e.add(n, evals, evals)
	case *parser.MatrixSelector:
		e.add(n, evals, satMul(evals, ceilDiv(n.Range, AssumedScrapeInterval)))
	case *parser.SubqueryExpr:
		step := n.Step
		if step <= 0 {
			step = AssumedScrapeInterval
		}
		inner := satMul(evals, ceilDiv(n.Range, step))
		// The points of the subquery, read by the function that takes
		// them at every evaluation, and the inner expression evaluated
		// at each of them.
		e.add(n, evals, inner)
		e.walk(n.Expr, inner)
	case *parser.NumberLiteral, *parser.StringLiteral, nil:
	default:
		for c := range parser.ChildrenIter(n) {
			e.walk(c, evals)
		}
	}
}

// checkCost refuses a query whose estimated work, evaluated at evals
// timestamps, is over MaxSamples.
func checkCost(expr parser.Expr, evals int64, rangeQuery bool) string {
	e := estimateCost(expr, evals)
	if e.total <= MaxSamples {
		return ""
	}
	how := "use fewer nested subqueries, larger subquery steps (such as [1d:1h] rather than [1d:5m]) or shorter ranges"
	if rangeQuery {
		how += ", or raise step or narrow start to end"
	}
	var part string
	if e.heaviest != nil {
		part = fmt.Sprintf("; the heaviest part, %s, is evaluated %s times", printable(e.heaviest.String()), count(e.heavyEvals))
	}
	return fmt.Sprintf("the query would make Prometheus read or compute an estimated %s samples per series, over the limit of %s (counted at one sample per %s, multiplied through nested subqueries and by the evaluation steps%s): %s",
		count(e.total), count(MaxSamples), model.Duration(AssumedScrapeInterval), part, how)
}

// count writes n for a reason: exactly while short, else in scientific
// notation; a saturated estimate is "over 10^18".
func count(n int64) string {
	switch {
	case n >= costLimit:
		return fmt.Sprintf("over %.0e", float64(costLimit))
	case n >= 1e10:
		return fmt.Sprintf("%.2g", float64(n))
	}
	return fmt.Sprintf("%d", n)
}

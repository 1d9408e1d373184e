package promguard

import (
	"regexp/syntax"
	"strings"

	"github.com/prometheus/prometheus/util/strutil"
)

// maxRegexCost bounds, per call, the estimated size of the regular
// expressions that parsing its PromQL compiles. The parser compiles every
// regex matcher as it parses, and counted repetitions multiply: a 16 KiB
// query of a{1000} repeated takes a second of CPU to compile, in the guard
// and again in Prometheus. A query without counted repetitions stays well
// under the bound however long it is.
const maxRegexCost = 64 << 10

// maxDepth bounds the nesting of parentheses in PromQL text: deeper
// nesting serves no query and costs the parser dearly (8,000 levels take
// 100 ms).
const maxDepth = 128

// scan estimates, before the parser runs, what compiling every string
// literal of the PromQL text q as a regular expression would cost, and how
// deep its parentheses nest. It finds the literals with a small scanner of
// its own: strings quoted with ", ' or `, and comments from # to the end
// of the line. Where it could err, it errs towards counting more.
func scan(q string) (cost int64, depth int) {
	d := 0
	for i := 0; i < len(q); {
		switch c := q[i]; c {
		case '(':
			d++
			depth = max(depth, d)
			i++
		case ')':
			d--
			i++
		case '#':
			j := strings.IndexByte(q[i:], '\n')
			if j < 0 {
				return cost, depth
			}
			i += j + 1
		case '"', '\'', '`':
			j := i + 1
			for j < len(q) && q[j] != c {
				if q[j] == '\\' && c != '`' {
					j++
				}
				j++
			}
			if j >= len(q) {
				return cost, depth // unterminated: the parser stops there too
			}
			if s, err := strutil.Unquote(q[i : j+1]); err == nil {
				cost += regexCost(s)
			}
			i = j + 1
		default:
			i++
		}
	}
	return cost, depth
}

// regexCost estimates the compiled size of s as a regular expression: one
// per node and literal rune, with counted repetitions multiplying what
// they repeat. Text that is no regular expression costs its length.
func regexCost(s string) int64 {
	re, err := syntax.Parse(s, syntax.Perl|syntax.DotNL)
	if err != nil {
		return int64(len(s))
	}
	return nodeCost(re)
}

func nodeCost(re *syntax.Regexp) int64 {
	const limit = 1 << 40 // far above maxRegexCost, far below overflow
	cost := int64(1 + len(re.Rune))
	for _, sub := range re.Sub {
		cost += nodeCost(sub)
	}
	if re.Op == syntax.OpRepeat {
		n := max(re.Max, re.Min, 1)
		cost *= int64(n)
	}
	return min(cost, limit)
}

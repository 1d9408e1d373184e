package clickhouse

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strconv"
	"strings"
)

// resultCounter counts the rows of a ClickHouse answer as it streams
// past, for query.finished's result_rows. ClickHouse 18.16 tells an HTTP
// client nothing about the rows it sent (no X-ClickHouse-Summary; its
// progress headers count rows read, and only before the answer starts),
// and newer releases' summary is sent before a large answer has streamed.
// So the count comes from the answer itself, for the formats where that
// is exact:
//
//   - JSON, JSONStrings, JSONCompact, JSONCompactStrings and XML end with
//     ClickHouse's own count of the rows ("rows": N, <rows>N</rows>),
//     taken only when it is the document's last rows field followed by
//     nothing but the format's closing statistics;
//   - the TabSeparated and JSON…EachRow formats and TSKV write one line
//     per row (values escape their newlines), less the WithNames and
//     WithNamesAndTypes header lines; an EachRow answer written as an
//     array (output_format_json_array_of_rows) is not counted;
//   - CSV writes one line per row outside quoted values.
//
// For the other formats (Pretty, Vertical, Raw, RowBinary, Native, …)
// the count is unknown and result_rows is left out. An answer that ends
// with ClickHouse's exception text (a limit hit after the answer began)
// is reported as failed, its rows unknown.
type resultCounter struct {
	kind    countKind
	header  int64 // header lines of the format
	lines   int64
	inQuote bool // CSV: inside a quoted value
	first   byte // first byte of the answer that is not white space
	tail    []byte
}

type countKind int

const (
	countNone    countKind = iota // rows cannot be told from the answer
	countLines                    // one line per row
	countCSV                      // one line per row outside quotes
	countJSON                     // ClickHouse's "rows": N
	countXML                      // ClickHouse's <rows>N</rows>
	countEachRow                  // one line per row, unless written as an array
)

// maxCountTail is how much of the end of an answer is kept, to read
// ClickHouse's count and spot its exception text.
const maxCountTail = 8 << 10

// newResultCounter counts the rows of an answer in format (any case).
func newResultCounter(format string) *resultCounter {
	c := &resultCounter{}
	f := strings.ToLower(format)
	base := f
	switch {
	case strings.HasSuffix(f, "withnamesandtypes"):
		c.header, base = 2, strings.TrimSuffix(f, "withnamesandtypes")
	case strings.HasSuffix(f, "withnames"):
		c.header, base = 1, strings.TrimSuffix(f, "withnames")
	}
	switch base {
	case "tabseparated", "tsv", "tskv":
		c.kind = countLines
	case "csv":
		c.kind = countCSV
	case "jsoneachrow", "jsonstringseachrow", "jsoncompacteachrow", "jsoncompactstringseachrow", "jsonlines", "ndjson":
		c.kind = countEachRow
	case "json", "jsonstrings", "jsoncompact", "jsoncompactstrings":
		c.kind = countJSON
	case "xml":
		c.kind = countXML
	}
	if c.kind == countJSON || c.kind == countXML {
		if c.header != 0 {
			c.kind = countNone
		}
	}
	return c
}

// Write takes the next piece of the answer; it never fails.
func (c *resultCounter) Write(p []byte) (int, error) {
	if c.first == 0 {
		if t := bytes.TrimLeft(p, " \t\r\n"); len(t) > 0 {
			c.first = t[0]
		}
	}
	switch c.kind {
	case countLines, countEachRow:
		c.lines += int64(bytes.Count(p, []byte{'\n'}))
	case countCSV:
		for _, b := range p {
			switch {
			case b == '"':
				c.inQuote = !c.inQuote // "" inside a value toggles twice
			case b == '\n' && !c.inQuote:
				c.lines++
			}
		}
	}
	if len(p) >= maxCountTail {
		c.tail = append(c.tail[:0], p[len(p)-maxCountTail:]...)
	} else {
		if over := len(c.tail) + len(p) - maxCountTail; over > 0 {
			c.tail = c.tail[:copy(c.tail, c.tail[over:])]
		}
		c.tail = append(c.tail, p...)
	}
	return len(p), nil
}

// chException is the text ClickHouse appends to an answer it could not
// finish: "Code: 396, e.displayText() = DB::Exception: …" (18.16) or
// "Code: 396. DB::Exception: …" (newer).
var chException = regexp.MustCompile(`Code: (\d+)[.,] (?:e\.displayText\(\) = )?DB::Exception`)

// exception reports the code of the ClickHouse exception an answer ends
// with, if any. A value a query selected may look like one too: its query
// is then reported as failed, which hides nothing.
func (c *resultCounter) exception() (string, bool) {
	m := chException.FindAllSubmatch(c.tail, -1)
	if len(m) == 0 {
		return "", false
	}
	return string(m[len(m)-1][1]), true
}

var (
	jsonRowsKey = []byte(`"rows"`)
	// jsonTrailer is what follows ClickHouse's count at the end of a
	// JSON answer: more counters and the flat statistics object.
	jsonTrailer = regexp.MustCompile(`^"rows"\s*:\s*(\d+)\s*(?:,\s*"[a-z_]+"\s*:\s*(?:\d+|\{[^{}]*\})\s*)*\}\s*$`)
	xmlRowsTag  = []byte(`<rows>`)
	xmlTrailer  = regexp.MustCompile(`^<rows>(\d+)</rows>\s*(?:<rows_before_limit_at_least>\d+</rows_before_limit_at_least>\s*)?(?:<statistics>\s*(?:<[a-z_]+>[0-9.e+-]+</[a-z_]+>\s*)*</statistics>\s*)?</result>\s*$`)
)

// rows is the number of rows the answer held, if it can be told.
func (c *resultCounter) rows() (int64, bool) {
	if _, ok := c.exception(); ok {
		return 0, false
	}
	switch c.kind {
	case countLines, countCSV:
		return max(c.lines-c.header, 0), true
	case countEachRow:
		if c.first == '[' {
			return 0, false
		}
		return max(c.lines-c.header, 0), true
	case countJSON:
		return trailerCount(c.tail, jsonRowsKey, jsonTrailer)
	case countXML:
		return trailerCount(c.tail, xmlRowsTag, xmlTrailer)
	}
	return 0, false
}

// trailerCount reads the count at the last key in tail, when all that
// follows it is the format's closing trailer.
func trailerCount(tail, key []byte, trailer *regexp.Regexp) (int64, bool) {
	i := bytes.LastIndex(tail, key)
	if i < 0 {
		return 0, false
	}
	m := trailer.FindSubmatch(tail[i:])
	if m == nil {
		return 0, false
	}
	n, err := strconv.ParseInt(string(m[1]), 10, 64)
	return n, err == nil
}

// clickHouseSummary reads what newer ClickHouse releases (not 18.16) say
// in X-ClickHouse-Summary: the rows and bytes read by the time the answer
// began, which for a large answer is before it ended.
func clickHouseSummary(h string) map[string]int64 {
	if h == "" || len(h) > 4<<10 {
		return nil
	}
	var raw map[string]any
	if json.Unmarshal([]byte(h), &raw) != nil {
		return nil
	}
	out := map[string]int64{}
	for _, k := range []string{"read_rows", "read_bytes"} {
		var n int64
		var err error
		switch v := raw[k].(type) {
		case string:
			n, err = strconv.ParseInt(v, 10, 64)
		case float64:
			n = int64(v)
		default:
			continue
		}
		if err == nil && n >= 0 {
			out[k] = n
		}
	}
	return out
}

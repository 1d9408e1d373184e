package clickhouse

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/tetherhq/tether/internal/source"
	"github.com/tetherhq/tether/internal/sqlguard"
)

// schemaTTL is how long the agent trusts its copy of the server's system
// columns. A ClickHouse upgrade adds columns; a log table appears at its
// first flush. Within the TTL the guard may still refuse * over a table
// it has not seen yet, never allow more.
const schemaTTL = 30 * time.Second

// maxSchemaBytes bounds the answer of the column list (about 3,000 rows of
// some 40 bytes on ClickHouse 25.x).
const maxSchemaBytes = 8 << 20

// schemaCache holds the SQL guard for the agent's ClickHouse, made from
// the server's own list of system columns, so that a column the server
// has and the guard's catalog does not cover is refused wherever * or a
// name could reach it.
type schemaCache struct {
	mu    sync.Mutex
	guard *sqlguard.Guard
	at    time.Time
}

// sqlGuard returns the guard for the server, reading the server's system
// columns when the copy is older than schemaTTL. It fails closed: without
// the server's columns no statement is checked.
func (e *engine) sqlGuard(ctx context.Context, env source.Env) (*sqlguard.Guard, error) {
	c := &e.schema
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.guard != nil && env.Now().Sub(c.at) < schemaTTL {
		return c.guard, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	s, err := e.readSchema(ctx, env)
	if err != nil {
		return nil, fmt.Errorf("read ClickHouse's system columns to check the query: %w", err)
	}
	c.guard, c.at = sqlguard.NewGuard(s), env.Now()
	return c.guard, nil
}

func (e *engine) readSchema(ctx context.Context, env source.Env) (sqlguard.Schema, error) {
	const q = "SELECT table, name, default_kind FROM system.columns WHERE database = 'system' FORMAT TabSeparated"
	req, err := e.newRequest(ctx, "/", q)
	if err != nil {
		return nil, err
	}
	res, err := env.Client().Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(res.Body, 4<<10))
		return nil, fmt.Errorf("ClickHouse answered %s: %s", res.Status, strings.TrimSpace(string(msg)))
	}
	return parseSchema(io.LimitReader(res.Body, maxSchemaBytes+1))
}

// parseSchema reads "table<TAB>column<TAB>default_kind" lines in
// ClickHouse's TabSeparated escaping.
func parseSchema(r io.Reader) (sqlguard.Schema, error) {
	s := sqlguard.Schema{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 64<<10)
	n := 0
	for sc.Scan() {
		n += len(sc.Bytes()) + 1
		if n > maxSchemaBytes {
			return nil, fmt.Errorf("the column list is over %d bytes", maxSchemaBytes)
		}
		f := strings.Split(sc.Text(), "\t")
		if len(f) != 3 || f[0] == "" || f[1] == "" {
			return nil, fmt.Errorf("malformed column list line %q", sc.Text())
		}
		table := "system." + UnescapeTSV(f[0])
		s[table] = append(s[table], sqlguard.SchemaColumn{Name: UnescapeTSV(f[1]), Alias: f[2] == "ALIAS"})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(s) == 0 {
		return nil, fmt.Errorf("the server listed no system columns")
	}
	return s, nil
}

// UnescapeTSV undoes ClickHouse's TabSeparated escaping (the CLI reads
// results with it too).
func UnescapeTSV(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		i++
		switch s[i] {
		case 't':
			b.WriteByte('\t')
		case 'n':
			b.WriteByte('\n')
		case 'r':
			b.WriteByte('\r')
		case 'b':
			b.WriteByte('\b')
		case 'f':
			b.WriteByte('\f')
		case '0':
			b.WriteByte(0)
		case '\\', '\'':
			b.WriteByte(s[i])
		default: // not an escape ClickHouse writes: keep it
			b.WriteByte('\\')
			b.WriteByte(s[i])
		}
	}
	return b.String()
}

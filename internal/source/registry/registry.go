// Package registry lists Tether's data sources: the one place a source is
// registered. The agent serves, the broker routes and authorizes, grants
// validate scopes and the CLI proxies exactly these; a new source is a
// package implementing [source.Source] and one line in [all].
package registry

import (
	"github.com/tetherhq/tether/internal/source"
	"github.com/tetherhq/tether/internal/source/clickhouse"
	"github.com/tetherhq/tether/internal/source/prometheus"
)

// all is every data source, in the order lists and messages name them.
var all = []source.Source{
	clickhouse.Source,
	prometheus.Source,
}

// All returns every data source.
func All() []source.Source { return append([]source.Source(nil), all...) }

// Lookup returns the source named name, such as "clickhouse".
func Lookup(name string) (source.Source, bool) {
	for _, s := range all {
		if s.Name == name {
			return s, true
		}
	}
	return source.Source{}, false
}

// Scopes returns the grant scope of every data source.
func Scopes() []string {
	out := make([]string, len(all))
	for i, s := range all {
		out[i] = s.Scope
	}
	return out
}

// Names returns the name of every data source.
func Names() []string {
	out := make([]string, len(all))
	for i, s := range all {
		out[i] = s.Name
	}
	return out
}

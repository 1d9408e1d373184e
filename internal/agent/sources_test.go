package agent

import (
	"net/http"

	"github.com/tetherhq/tether/internal/source/clickhouse"
	"github.com/tetherhq/tether/internal/source/prometheus"
)

// The agent's tests call the two sources' handlers by name, as the mux
// serves them.

func (a *Agent) handleClickHouse(w http.ResponseWriter, r *http.Request) {
	a.serveSource(clickhouse.Source)(w, r)
}

func (a *Agent) handlePrometheus(w http.ResponseWriter, r *http.Request) {
	a.serveSource(prometheus.Source)(w, r)
}

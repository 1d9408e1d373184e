#!/usr/bin/env bash
# `make run`: a dev broker (bin/broker-dev) with its own private tailnet, plus one agent
# paired to deployment acme/prod, all state under ./.tether-dev/.
set -euo pipefail

dir=${TETHER_DEV_DIR:-./.tether-dev}
listen=${TETHER_DEV_LISTEN:-127.0.0.1:8443}
mkdir -p "$dir"
rm -f "$dir/broker/cli.json"

pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	[ -f "$dir/upstreams.pids" ] && while read -r p; do kill "$p" 2>/dev/null || true; done <"$dir/upstreams.pids"
	wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

echo "Starting ClickHouse and Prometheus for the agent to guard..."
read -r -a upstream_args <<<"$(scripts/dev-upstreams.sh "$dir")"

bin/broker-dev serve --dev --data-dir "$dir/broker" --listen "$listen" 2>>"$dir/broker.log" &
pids+=($!)
echo "Starting the dev broker (log: $dir/broker.log)..."
for _ in $(seq 1 600); do
	[ -f "$dir/broker/cli.json" ] && break
	kill -0 "${pids[0]}" 2>/dev/null || { echo "broker exited; last log lines:" >&2; tail -n 5 "$dir/broker.log" >&2; exit 1; }
	sleep 0.2
done
[ -f "$dir/broker/cli.json" ] || { echo "broker did not become ready in 120s" >&2; exit 1; }
export TETHER_CONFIG="$dir/broker/cli.json"

token_args=()
if [ ! -f "$dir/agent/state.json" ]; then
	if ! bin/broker deployment show acme/prod >/dev/null 2>&1; then
		out=$(bin/broker deployment create --tenant acme --name prod --region us-east-1 --output json)
	else
		out=$(bin/broker deployment pairing-token acme/prod --output json)
	fi
	# The token goes to the agent in a file (mode 0600), never on its
	# command line, where any local user could read it in ps.
	(umask 077 && printf '%s' "$out" | sed -n 's/.*"token": "\(tpt_[A-Za-z0-9_-]*\)".*/\1/p' >"$dir/pairing-token")
	token_args=(--pairing-token "file:$dir/pairing-token")
fi
# The agent is the customer's: it serves only grants acme's own identity
# provider (the dev one, on the broker's port) signed for acme's approvers.
approval_args=(--approver-issuer "http://$listen/dev/idp/acme" --approver-audience tether --approver-group acme-approvers)
bin/agent run --join "$dir/broker/join.json" --state-dir "$dir/agent" "${token_args[@]}" "${upstream_args[@]}" "${approval_args[@]}" 2>>"$dir/agent.log" &
pids+=($!)
echo "Starting the agent (log: $dir/agent.log)..."
for _ in $(seq 1 600); do
	bin/broker deployment show acme/prod --output json 2>/dev/null | grep -q '"agent_status": "online"' && break
	kill -0 "${pids[1]}" 2>/dev/null || { echo "agent exited; last log lines:" >&2; tail -n 5 "$dir/agent.log" >&2; exit 1; }
	sleep 0.2
done
rm -f "$dir/pairing-token" # used once: the agent has paired

# One CLI config per role of the tour, logged in at the dev broker's
# identity provider.
api=$(sed -n 's/.*"api_url": "\([^"]*\)".*/\1/p' "$dir/broker/cli.json")
for who in engineer@vendor.test approver@acme.test approver@globex.test reviewer@vendor.test; do
	bin/broker login --api-url "$api" --dev-user "$who" --config "$dir/${who%%@*}-${who#*@}.json" >/dev/null
done
if [ ${#upstream_args[@]} -gt 0 ]; then
	data="an agent paired to acme/prod guarding a local ClickHouse and Prometheus"
else
	data="an agent paired to acme/prod (no ClickHouse/Prometheus: see the note above)"
fi

cat <<MSG

Tether dev is running: a broker with its own tailnet and identity provider, and
$data.
The tour (README "The tour"), in another terminal; each role has its own config:

    ENG=$dir/engineer-vendor.test.json ACME=$dir/approver-acme.test.json REV=$dir/reviewer-vendor.test.json
  The engineer asks:
    bin/broker request create --config \$ENG --deployment acme/prod --scope clickhouse:system,prometheus:read \\
        --duration 30m --reason "merges are slow" --wait
  acme's approver approves (a third terminal, with the same variables):
    bin/broker request list --config \$ACME --state pending
    bin/broker request approve --config \$ACME <ID> --comment "go ahead"
  The engineer troubleshoots:
    bin/broker query --config \$ENG --deployment acme/prod "SELECT metric, value FROM system.metrics LIMIT 5"
    bin/broker query --config \$ENG --deployment acme/prod "SELECT * FROM default.secret"     # denied
    bin/broker prom --config \$ENG --deployment acme/prod 'up'
  The security reviewer replays it:
    bin/broker audit show-session --config \$REV <GRANT_ID>

The admin's config (bootstrap token) is $dir/broker/cli.json. Ctrl-C stops everything.
MSG
wait

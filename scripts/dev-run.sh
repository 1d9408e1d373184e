#!/usr/bin/env bash
# `make run`: a dev broker with its own private tailnet, plus one agent
# paired to deployment acme/prod, all state under ./.tether-dev/.
set -euo pipefail

dir=${TETHER_DEV_DIR:-./.tether-dev}
listen=${TETHER_DEV_LISTEN:-127.0.0.1:8443}
mkdir -p "$dir"
rm -f "$dir/broker/cli.json"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

bin/broker serve --dev --data-dir "$dir/broker" --listen "$listen" 2>>"$dir/broker.log" &
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
	token=$(printf '%s' "$out" | sed -n 's/.*"token": "\(tpt_[A-Za-z0-9_-]*\)".*/\1/p')
	token_args=(--pairing-token "$token")
fi
bin/agent run --join "$dir/broker/join.json" --state-dir "$dir/agent" "${token_args[@]}" 2>>"$dir/agent.log" &
pids+=($!)
echo "Starting the agent (log: $dir/agent.log)..."
for _ in $(seq 1 600); do
	bin/broker deployment show acme/prod --output json 2>/dev/null | grep -q '"agent_status": "online"' && break
	kill -0 "${pids[1]}" 2>/dev/null || { echo "agent exited; last log lines:" >&2; tail -n 5 "$dir/agent.log" >&2; exit 1; }
	sleep 0.2
done

cat <<MSG

Tether dev is running: a broker with its own tailnet, and an agent paired to acme/prod.

Try, in another terminal:
    export TETHER_CONFIG=$dir/broker/cli.json
    bin/broker deployment list
    bin/broker deployment show acme/prod
    bin/broker deployment ping acme/prod
    bin/broker deployment create --tenant globex --name staging   # prints a pairing token
    bin/agent run --join $dir/broker/join.json --state-dir /tmp/agent2 --pairing-token <token>

Ctrl-C stops both.
MSG
wait

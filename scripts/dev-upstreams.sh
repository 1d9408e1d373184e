#!/usr/bin/env bash
# Part of `make run`: starts a local ClickHouse and Prometheus for the
# dev agent to guard, under $1 (state) on loopback ports, installing the
# Debian packages first when they are missing and we are root. Prints
# the agent flags on stdout; prints nothing (and says why on stderr) when
# they cannot run. Sourced PIDs go to $1/upstreams.pids.
set -euo pipefail

dir=$(cd "$1" && pwd)
ch_http=${TETHER_DEV_CH_PORT:-18123}
ch_tcp=${TETHER_DEV_CH_TCP_PORT:-19000}
prom_port=${TETHER_DEV_PROM_PORT:-19090}
repo=$(cd "$(dirname "$0")/.." && pwd)

have_ch() { command -v clickhouse-server >/dev/null 2>&1 || [ -x /usr/sbin/clickhouse-server ]; }
missing=()
have_ch || missing+=(clickhouse-server clickhouse-client)
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
if [ ${#missing[@]} -gt 0 ]; then
	if [ "$(id -u)" -eq 0 ]; then
		echo "Installing ${missing[*]} (apt-get)..." >&2
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	else
		echo "note: ${missing[*]} not installed and not root: the agent runs without them." >&2
		echo "      Install them (sudo apt-get install --no-install-recommends ${missing[*]}) for the data-plane tour." >&2
		exit 0
	fi
fi
ch_bin=$(command -v clickhouse-server || echo /usr/sbin/clickhouse-server)

wait_port() { # port, seconds
	for _ in $(seq 1 $(($2 * 10))); do
		(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
		sleep 0.1
	done
	return 1
}

: >"$dir/upstreams.pids"
# ClickHouse, with Tether's read-only user (deploy/clickhouse/users.d) and
# a customer table the guard must never let through.
ch="$dir/clickhouse"
mkdir -p "$ch/data" "$ch/tmp" "$ch/user_files" "$ch/users.d"
cp "$repo/deploy/clickhouse/users.d/tether.xml" "$ch/users.d/"
cat >"$ch/users.xml" <<XML
<yandex>
  <profiles><default><max_memory_usage>2000000000</max_memory_usage></default></profiles>
  <users><default><password></password><networks><ip>127.0.0.1</ip></networks><profile>default</profile><quota>default</quota></default></users>
  <quotas><default></default></quotas>
</yandex>
XML
cat >"$ch/config.xml" <<XML
<yandex>
  <logger><level>warning</level><console>1</console></logger>
  <listen_host>127.0.0.1</listen_host>
  <http_port>$ch_http</http_port>
  <tcp_port>$ch_tcp</tcp_port>
  <path>$ch/data/</path>
  <tmp_path>$ch/tmp/</tmp_path>
  <user_files_path>$ch/user_files/</user_files_path>
  <users_config>$ch/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>268435456</mark_cache_size>
</yandex>
XML
(cd "$ch" && exec "$ch_bin" --config-file="$ch/config.xml") >>"$dir/clickhouse.log" 2>&1 &
echo $! >>"$dir/upstreams.pids"
wait_port "$ch_http" 60 || { echo "ClickHouse did not start; see $dir/clickhouse.log" >&2; exit 0; }
for _ in $(seq 1 50); do
	clickhouse-client --port "$ch_tcp" --query "SELECT 1" >/dev/null 2>&1 && break
	sleep 0.2
done
clickhouse-client --port "$ch_tcp" --query "CREATE TABLE IF NOT EXISTS default.secret (customer String, card String) ENGINE = Memory" >/dev/null
[ "$(clickhouse-client --port "$ch_tcp" --query "SELECT count() FROM default.secret")" != "0" ] ||
	clickhouse-client --port "$ch_tcp" --query "INSERT INTO default.secret VALUES ('ACME Corp', '4111-1111-1111-1111')" >/dev/null
printf 'tether-test\n' >"$dir/clickhouse-password"
chmod 600 "$dir/clickhouse-password"

# Prometheus, scraping itself.
pr="$dir/prometheus"
mkdir -p "$pr/data"
cat >"$pr/prometheus.yml" <<YML
global:
  scrape_interval: 5s
scrape_configs:
  - job_name: prometheus
    static_configs:
      - targets: ['127.0.0.1:$prom_port']
YML
prometheus --config.file="$pr/prometheus.yml" --storage.tsdb.path="$pr/data" \
	--web.listen-address="127.0.0.1:$prom_port" >>"$dir/prometheus.log" 2>&1 &
echo $! >>"$dir/upstreams.pids"
wait_port "$prom_port" 60 || { echo "Prometheus did not start; see $dir/prometheus.log" >&2; exit 0; }

echo "--clickhouse-url http://127.0.0.1:$ch_http --clickhouse-user tether --clickhouse-password-file $dir/clickhouse-password --prometheus-url http://127.0.0.1:$prom_port"

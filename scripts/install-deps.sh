#!/usr/bin/env bash
# Installs what `make test` needs and is missing, via apt-get when root:
# PostgreSQL (store tests), nftables and iproute2 (the no-inbound test),
# ClickHouse and Prometheus (the guarded data plane), Chromium (the web
# console's browser tests, driven by chromedp over the DevTools protocol, so
# no chromedriver), haproxy (several brokers behind a load balancer); and
# cfn-lint, with pip.
# Not root: prints what is missing; those tests skip (or fail under CI=true).
set -euo pipefail

# cfn-lint (PyPI) lints the CloudFormation templates in deploy/aws
# (internal/netmgr's TestTemplatesLint). Tried with pip when root and
# missing; a failure (no index reachable, no pip) is reported, not fatal.
if ! command -v cfn-lint >/dev/null 2>&1; then
	if [ "$(id -u)" -eq 0 ] && python3 -m pip --version >/dev/null 2>&1; then
		echo "install-deps: installing cfn-lint with pip" >&2
		# Debian's Python refuses a root pip install (PEP 668) unless told.
		pipi() { python3 -m pip install -q --timeout 15 --retries 1 "$@" cfn-lint >/dev/null 2>&1; }
		pipi || pipi --break-system-packages ||
			echo "install-deps: could not pip install cfn-lint; the template lint will skip (or fail under CI=true)" >&2
	else
		echo "install-deps: cfn-lint is missing (pip install cfn-lint); the template lint will skip (or fail under CI=true)" >&2
	fi
fi

missing=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v nft >/dev/null 2>&1 || missing+=(nftables)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v clickhouse-server >/dev/null 2>&1 || [ -x /usr/sbin/clickhouse-server ] || missing+=(clickhouse-server clickhouse-client)
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)

if [ ${#missing[@]} -eq 0 ]; then
	exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
	echo "install-deps: not root; missing Debian packages: ${missing[*]} (tests needing them will skip)" >&2
	exit 0
fi
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

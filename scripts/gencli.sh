#!/bin/sh
# gencli.sh writes docs/cli.md from the -h output of every command of the
# broker, broker-dev and agent binaries, as the command-line framework
# lists them. Run it after changing a command; internal/brokercli and
# internal/agentcli tests check that every command has its section.
set -eu
cd "$(dirname "$0")/.."
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
go build -trimpath -tags ts_omit_peerapiserver -o "$bin/" ./cmd/broker ./cmd/broker-dev ./cmd/agent

# commands BIN PATH...: the subcommands the help of PATH lists, one path a line.
commands() {
	b=$1; shift
	"$bin/$b" "$@" -h | awk '
		/^Commands:/ { on = 1; next }
		on && /^[^ ]/ { on = 0 }
		on && /^  [^ ]/ {
			line = substr($0, 3); sub(/  .*/, "", line); gsub(/ \([^)]*\)/, "", line)
			print line
		}'
}

# section BIN PATH...: the help of PATH, then of each subcommand.
section() {
	b=$1; shift
	printf '### `%s`\n\n```text\n' "$(echo "$b $*" | sed 's/ *$//')"
	"$bin/$b" "$@" -h
	printf '```\n\n'
	commands "$b" "$@" | while read -r sub; do
		# shellcheck disable=SC2086
		section "$b" $sub
	done
}

{
	cat <<'HEAD'
# Command-line reference

Every command of the two binaries, as its `-h` prints it (written by `scripts/gencli.sh`; a test
fails when a command has no section here). `bin/broker` is the production broker and its CLI,
`bin/broker-dev` the same plus `serve --dev` (for `make run` and the tests), and `bin/agent` runs in
the customer's VPC; `make build` writes all three. The tour of each role is in the
[README](../README.md); running them for real is in [operations.md](operations.md).

`-h` works at every level (`broker deployment -h`, `broker network ingress -h`), and so does
`help` (`broker help request list`, `broker deployment help`). A mistyped command or flag is a
usage error (exit 2) that names the closest one. Client commands find their CLI config in
`--config FILE`, else `$TETHER_CONFIG`, else `~/.config/tether/cli.json`; `--output json` (`-o
json`) gives machine-readable output. Secrets are given as `env:NAME` or `file:PATH`, never on the
command line.

## Server configuration: flag, then environment, then file

`broker serve` takes each setting from its flag, else its `TETHER_*` environment variable, else
the JSON config file given with `--config` (see `deploy/broker.example.json`): a flag wins over
the environment, the environment over the file. One declaration in `internal/brokercli`
(`serverConfig`) names each setting's file key, variable and flag:

| file key | environment | flag |
| --- | --- | --- |
| `data_dir` | `TETHER_DATA_DIR` | `--data-dir` |
| `listen` | `TETHER_LISTEN` | `--listen` |
| `tls_cert`, `tls_key` | `TETHER_TLS_CERT`, `TETHER_TLS_KEY` | `--tls-cert`, `--tls-key` |
| `heartbeat_interval` | | `--heartbeat-interval` |
| `policy_dir` | `TETHER_POLICY_DIR` | `--policy-dir` |
| `aws_endpoint_url` | `TETHER_AWS_ENDPOINT_URL` | `--aws-endpoint-url` |
| `network.private_domain` | `TETHER_NETWORK_PRIVATE_DOMAIN` | `--network-private-domain` |
| `store_driver`, `store_dsn` | `TETHER_STORE_DRIVER`, `TETHER_STORE_DSN` | |
| `control_url`, `auth_key` | `TETHER_CONTROL_URL`, `TETHER_AUTH_KEY` | |
| `hostname`, `public_url` | `TETHER_HOSTNAME`, `TETHER_PUBLIC_URL` | |
| `network_seal_key` | `TETHER_NETWORK_SEAL_KEY` | |
| `identity`, `github`, `webhooks`, `pending_timeout` | | |

Secrets (`auth_key`, `store_dsn`, `network_seal_key`, the GitHub token and key, webhook secrets)
have no flag, so that they never show in `ps`.

## broker

HEAD
	section broker
	printf '## broker-dev\n\n`bin/broker-dev` has every command of `bin/broker`; its `serve` also takes `--dev`:\n\n'
	printf '### `broker-dev serve`\n\n```text\n'
	"$bin/broker-dev" serve -h
	printf '```\n\n## agent\n\n'
	section agent
} > docs/cli.md
echo "wrote docs/cli.md"

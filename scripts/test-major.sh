#!/usr/bin/env bash
# Usage: scripts/test-major.sh MAJOR [cargo test args...]
#
# Runs the tests against PostgreSQL MAJOR (15, 16, 17 or 18): every test cluster is started from
# that major's bin directory (TRACE_SUMMARIZER_PG_BINDIR). 15 is Debian's postgresql-15 (with
# pg_cron, and TimescaleDB where installed); 16 to 18 are server-only builds fetched by
# scripts/pg-major.sh, on which the tests that need psql, pg_dump, pg_cron or TimescaleDB skip,
# saying so. Without arguments it runs the whole suite; otherwise the arguments go to
# `cargo test --locked` (e.g. `--test incremental --test tailing`), followed by
# `-- --test-threads=2` unless they hold a `--` of their own.
#   scripts/test-major.sh 18 --test incremental --test shapes
set -euo pipefail
cd "$(dirname "$0")/.."

major=${1:-}
[ $# -gt 0 ] && shift
case "$major" in
  15)
    bindir=/usr/lib/postgresql/15/bin
    [ -x "$bindir/initdb" ] || {
      echo "$0: $bindir/initdb not found: apt-get install -y postgresql-15 postgresql-15-cron" >&2
      exit 1
    }
    ;;
  16 | 17 | 18) bindir=$(scripts/pg-major.sh "$major") ;;
  *)
    echo "usage: $0 15|16|17|18 [cargo test args...]" >&2
    exit 2
    ;;
esac

args=("$@")
has_separator=false
for a in "${args[@]}"; do
  [ "$a" = "--" ] && has_separator=true
done
$has_separator || args+=(-- --test-threads=2)

echo "testing against $("$bindir/postgres" --version) ($bindir)" >&2
export TRACE_SUMMARIZER_PG_BINDIR=$bindir
exec cargo test --locked "${args[@]}"

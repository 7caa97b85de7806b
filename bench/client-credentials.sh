#!/usr/bin/env bash
# Client-credentials issuance throughput over HTTP against its cost floor :
#   floor = 1 / (1/healthz_rps + t_sign)
# where healthz_rps is what the same server answers on /healthz (the cost of HTTP alone) and t_sign
# is one ES256 signature measured on this machine (JwtBenchmarks.EcdsaP256Sign). Target: ratio >= 0.7.
#   bench/client-credentials.sh [SECONDS] [CONNECTIONS]
# T_SIGN_US=<microseconds> skips the BenchmarkDotNet run that measures t_sign.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
seconds=${1:-10}
connections=${2:-16}
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }

if [[ -z "${T_SIGN_US:-}" ]]; then
    echo "measuring t_sign (BenchmarkDotNet, about a minute)..."
    dotnet run -c Release --project bench/Portcullis.Benchmarks -- --filter '*JwtBenchmarks.EcdsaP256Sign*' >/tmp/portcullis-tsign.log 2>&1
    csv=BenchmarkDotNet.Artifacts/results/Portcullis.Benchmarks.JwtBenchmarks-report.csv
    # Median column, e.g. "23.45 μs" or "23,456.7 ns".
    T_SIGN_US=$(python3 - "$csv" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
row = next(r for r in rows if r["Method"] == "EcdsaP256Sign")
value, unit = row["Median"].replace(",", "").split()
print(float(value) * {"ns": 1e-3, "μs": 1, "us": 1, "ms": 1e3}[unit])
PY
)
fi
echo "t_sign = ${T_SIGN_US} µs"

source bench/serve.sh client-credentials-bench

jwt=$(curl -sf "$base/auth/token" -H 'Content-Type: application/json' \
    -d '{"username":"admin","password":"client-credentials-bench"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
read -r client_id client_secret < <(curl -sf "$base/api/v1/clients" -H "Authorization: Bearer $jwt" -H 'Content-Type: application/json' \
    -d '{"name":"bench","scopes":["services"]}' | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["client_id"], d["client_secret"])')
basic=$(printf '%s:%s' "$client_id" "$client_secret" | base64 -w0)

cat >"$dir/token.lua" <<LUA
wrk.method = "POST"
wrk.body = "grant_type=client_credentials"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "Basic $basic"
local failed = 0
response = function(status, headers, body) if status ~= 200 then failed = failed + 1 end end
done = function(summary, latency, requests) io.write(string.format("non-200: %d\n", failed)) end
LUA
# The per-thread failure counts are printed by each thread's done(); wrk's own "Non-2xx" line is the total.

run() { # name url [script]
    local out
    out=$(wrk -t2 -c"$connections" -d"${seconds}s" --latency ${3:+-s "$3"} "$2")
    local rps p99
    rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    if grep -q "Non-2xx" <<<"$out"; then echo "$1: errors: $(grep Non-2xx <<<"$out")" >&2; exit 1; fi
    echo "$1 $rps $p99"
}

echo "warm-up..."
wrk -t2 -c"$connections" -d3s "$base/healthz" >/dev/null
wrk -t2 -c"$connections" -d3s -s "$dir/token.lua" "$base/auth/token" >/dev/null

results=()
for round in 1 2 3; do
    results+=("$(run healthz "$base/healthz")")
    results+=("$(run client_credentials "$base/auth/token" "$dir/token.lua")")
done
printf '%s\n' "${results[@]}" >"$dir/results"
python3 - "$T_SIGN_US" "$dir/results" <<'PY'
import sys, statistics
t_sign = float(sys.argv[1]) * 1e-6
rows = [l.split() for l in open(sys.argv[2]) if l.strip()]
by = {}
for name, rps, p99 in rows:
    by.setdefault(name, []).append((float(rps), p99))
print(f"{'endpoint':<20} {'round':>5} {'req/s':>10} {'p99':>9}")
for name, runs in by.items():
    for i, (rps, p99) in enumerate(runs, 1):
        print(f"{name:<20} {i:>5} {rps:>10.0f} {p99:>9}")
h = statistics.median(r for r, _ in by["healthz"])
c = statistics.median(r for r, _ in by["client_credentials"])
floor = 1 / (1 / h + t_sign)
print(f"\nmedian healthz {h:.0f} req/s; t_sign {t_sign*1e6:.1f} µs; floor 1/(1/{h:.0f} + {t_sign*1e6:.1f} µs) = {floor:.0f} req/s")
print(f"client_credentials median {c:.0f} req/s = {c/floor:.2f} x floor (target >= 0.7)")
PY

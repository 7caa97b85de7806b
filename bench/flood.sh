#!/usr/bin/env bash
# Token verification under attack (docs/performance.md, "Under a flood"). A legitimate caller verifies a cached
# API token (GET /api/v1/me, wrk, VICTIM_CONNECTIONS) while FLOOD_CONNECTIONS more connections flood the server
# with one of:
#   wrong_password  POST /auth/token, grant_type=password, a wrong password for a real user
#   random_token    GET /api/v1/me with a fresh random well-formed token (valid checksum) on every request
#   bad_secret      POST /auth/token, grant_type=client_credentials, a real client_id with a wrong secret
# and, as its baseline, the same flood (same wrk script, same connections, so the same cost to the client on
# this machine) sent to /healthz instead. Target: under each attack flood the caller keeps >= 0.8x the req/s it
# keeps under that flood of /healthz requests, with p99 <= 2x.
# Each round measures both targets of a flood back to back, the baseline first in odd rounds and last in even
# ones, so that neither side always runs on a warmer (or more tired) server. FLOODS picks floods by name.
# With COST=1 there is no caller: each flood runs alone, and what is measured is the server's CPU time per flood
# request (user + system, from /proc/PID/stat), against the same flood at /healthz: what a refusal costs.
#   [ROUNDS=3] [FLOODS="wrong_password random_token bad_secret"] [COST=1] bench/flood.sh [SECONDS] [VICTIM_CONNECTIONS] [FLOOD_CONNECTIONS]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
seconds=${1:-10}
victims=${2:-32}
flooders=${3:-64}
rounds=${ROUNDS:-3}
floods=${FLOODS:-wrong_password random_token bad_secret}
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }

source bench/serve.sh flood-bench-password

json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
jwt=$(curl -sf "$base/auth/token" -H 'Content-Type: application/json' -d '{"username":"admin","password":"flood-bench-password"}' | json '["access_token"]')
token=$(curl -sf "$base/api/v1/tokens" -H "Authorization: Bearer $jwt" -H 'Content-Type: application/json' -d '{"name":"victim"}' | json '["token"]')
client_id=$(curl -sf "$base/api/v1/clients" -H "Authorization: Bearer $jwt" -H 'Content-Type: application/json' \
    -d '{"name":"flooded","scopes":["services"]}' | json '["client_id"]')

cat >"$dir/victim.lua" <<LUA
wrk.headers["Authorization"] = "Bearer $token"
LUA
cat >"$dir/wrong_password.lua" <<'LUA'
wrk.method = "POST"
wrk.body = "grant_type=password&username=admin&password=not-the-password"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
LUA
# Well-formed tokens: pcp_, 30 random base62 characters, then the CRC-32 of all that in 6 base62 digits
# (Security/TokenFormat.cs). LuaJIT's bit library; a new token on every request, so nothing repeats.
cat >"$dir/random_token.lua" <<'LUA'
local bit = require("bit")
local alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
local crcTable = {}
for i = 0, 255 do
  local c = i
  for _ = 1, 8 do
    if bit.band(c, 1) == 1 then c = bit.bxor(bit.rshift(c, 1), 0xEDB88320) else c = bit.rshift(c, 1) end
  end
  crcTable[i] = c
end
local function crc32(s)
  local c = 0xFFFFFFFF
  for i = 1, #s do c = bit.bxor(bit.rshift(c, 8), crcTable[bit.band(bit.bxor(c, s:byte(i)), 0xFF)]) end
  c = bit.bxor(c, 0xFFFFFFFF)
  if c < 0 then c = c + 4294967296 end
  return c
end
local counter = 0
function setup(thread) counter = counter + 1; thread:set("seed", counter) end
function init(args) math.randomseed(os.time() * 1000 + (seed or 0)) end
function token()
  local t = {"pcp_"}
  for i = 1, 30 do local k = math.random(1, 62); t[#t + 1] = alphabet:sub(k, k) end
  local s = table.concat(t)
  local crc, digits = crc32(s), {}
  for i = 6, 1, -1 do local d = crc % 62; digits[i] = alphabet:sub(d + 1, d + 1); crc = math.floor(crc / 62) end
  return s .. table.concat(digits)
end
function request() return wrk.format("GET", nil, {["Authorization"] = "Bearer " .. token()}) end
LUA
# A wrong secret in the secret format (its checksum is wrong too), made here rather than written out.
wrong_secret="pcc_$(printf '0%.0s' $(seq 36))"
cat >"$dir/bad_secret.lua" <<LUA
wrk.method = "POST"
wrk.body = "grant_type=client_credentials&client_id=$client_id&client_secret=$wrong_secret"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
LUA

flood_url() { case $1 in wrong_password|bad_secret) echo "$base/auth/token" ;; random_token) echo "$base/api/v1/me" ;; esac; }

run() { # flood target(attack|healthz) -> "flood target victim_rps victim_p99 flood_rps"
    local flood=$1 target=$2 url
    url=$([[ $target == healthz ]] && echo "$base/healthz" || flood_url "$flood")
    wrk -t1 -c"$flooders" -d"$((seconds + 2))s" -s "$dir/$flood.lua" "$url" >"$dir/flood.out" 2>&1 &
    local fpid=$!
    sleep 1
    local out
    out=$(wrk -t1 -c"$victims" -d"${seconds}s" --latency -s "$dir/victim.lua" "$base/api/v1/me")
    wait $fpid
    if grep -q "Non-2xx" <<<"$out"; then echo "victim errors in $flood: $(grep Non-2xx <<<"$out")" >&2; exit 1; fi
    echo "$flood $target $(awk '/^Requests\/sec/ {print $2}' <<<"$out") $(awk '$1 == "99%" {print $2}' <<<"$out") $(awk '/^Requests\/sec/ {print $2}' "$dir/flood.out")"
}

cost() { # flood target(attack|healthz) -> "flood target microseconds_of_server_cpu_per_request"
    local flood=$1 target=$2 url before after out
    url=$([[ $target == healthz ]] && echo "$base/healthz" || flood_url "$flood")
    before=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    out=$(wrk -t1 -c"$flooders" -d"${seconds}s" -s "$dir/$flood.lua" "$url")
    after=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    echo "$flood $target $(awk -v ticks=$((after - before)) -v hz="$(getconf CLK_TCK)" '/requests in/ {printf "%.1f", ticks / hz * 1e6 / $1}' <<<"$out")"
}

# Warm-up: the caller's path, then each flood at both its targets, so that every round measures a steady flood (the
# throttle already full, the refusal paths compiled) rather than the first 10 wrong passwords or 50 wrong secrets.
echo "warm-up..."
wrk -t1 -c"$victims" -d3s -s "$dir/victim.lua" "$base/api/v1/me" >/dev/null
for flood in $floods; do
    wrk -t1 -c"$flooders" -d3s -s "$dir/$flood.lua" "$(flood_url "$flood")" >/dev/null
    wrk -t1 -c"$flooders" -d3s -s "$dir/$flood.lua" "$base/healthz" >/dev/null
done
results=()
for round in $(seq "$rounds"); do
    targets="healthz attack"
    ((round % 2 == 0)) && targets="attack healthz"
    for flood in $floods; do
        for target in $targets; do
            results+=("$(if [[ ${COST:-} ]]; then cost "$flood" "$target"; else run "$flood" "$target"; fi)")
            echo "  ${results[-1]}"
        done
    done
done
printf '%s\n' "${results[@]}" >"$dir/results"
curl -s "$base/metrics" | grep -E '^portcullis_(credential_verifications_total|password_checks)' || true
if [[ ${COST:-} ]]; then
    python3 - "$dir/results" <<'PY'
import sys, statistics
by = {}
for line in open(sys.argv[1]):
    flood, target, us = line.split()
    by.setdefault(flood, {}).setdefault(target, []).append(float(us))
for flood, targets in by.items():
    attack, healthz = statistics.median(targets["attack"]), statistics.median(targets["healthz"])
    print(f"{flood:<16} {attack:6.1f} us of server CPU per request, {healthz:6.1f} us for the same flood at /healthz: {attack / healthz:.2f}x")
PY
    exit 0
fi
python3 - "$dir/results" <<'PY'
import sys, statistics
def ms(v):
    return float(v[:-2]) if v.endswith("ms") else float(v[:-2]) / 1000 if v.endswith("us") else float(v[:-1]) * 1000
by = {}
for line in open(sys.argv[1]):
    flood, target, rps, p99, frps = line.split()
    by.setdefault((flood, target), []).append((float(rps), ms(p99), float(frps)))
def median(flood, target, i):
    return statistics.median(run[i] for run in by[(flood, target)])
print(f"{'flood':<16} {'target':<8} {'victim req/s':>12} {'p99 ms':>8} {'flood req/s':>12}")
for (flood, target) in by:
    print(f"{flood:<16} {target:<8} {median(flood, target, 0):>12.0f} {median(flood, target, 1):>8.2f} {median(flood, target, 2):>12.0f}")
print()
for flood in dict.fromkeys(f for f, _ in by):
    ratio = median(flood, "attack", 0) / median(flood, "healthz", 0)
    p99 = median(flood, "attack", 1) / median(flood, "healthz", 1)
    print(f"{flood:<16} victim req/s {ratio:.2f}x, p99 {p99:.2f}x the same flood at /healthz  (target >= 0.8x, <= 2x)")
PY

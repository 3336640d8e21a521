#!/usr/bin/env bash
# A cached verifier-plugin call against the same check run as a subprocess, side by side:
#   metrics-threshold (`score >= 0.8` on a metrics file), called in-process after one load
#   vs  jq -e '.score >= 0.8' m.json   vs  python3 reading the same file.
# Writes the ratios to docs/performance.md (section "Plugin call vs subprocess").
# Usage: benches/plugins.sh [calls]   (needs hyperfine and jq; installs them with apt-get)
set -euo pipefail
cd "$(dirname "$0")/.."
calls="${1:-2000}"

source benches/lib.sh
ensure_tools "hyperfine" "jq"
cargo build --release --quiet
bin="$PWD/target/release/fsm-runner"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
repo="$work/repo"; mkdir -p "$repo"
echo '{"score": 0.91, "samples": 128, "latency": {"p95": 120.5}}' > "$repo/m.json"
export XDG_CACHE_HOME="$work/cache"

config='{"path": "m.json", "required": ["score"], "checks": ["score >= 0.8"]}'
"$bin" plugin run metrics-threshold --repo "$repo" --config "$config" >/dev/null   # fill the cache
rounds=5
for round in $(seq 1 $rounds); do
  "$bin" plugin run metrics-threshold --repo "$repo" --config "$config" --repeat "$calls" --json > "$work/plugin-$round.json"
  (cd "$repo" && hyperfine -N --warmup 10 --runs 200 --export-json "$work/sub-$round.json" \
    -n jq "jq -e '.score >= 0.8' m.json" \
    -n python3 "python3 -c 'import json,sys; sys.exit(0 if json.load(open(\"m.json\"))[\"score\"] >= 0.8 else 1)'" >/dev/null)
done

python3 - "$calls" "$rounds" "$work" <<'PY' | write_section docs/performance.md
import json, re, statistics, sys, datetime, platform
calls, rounds, work = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rows = []
for r in range(1, rounds + 1):
    plugin = json.load(open(f"{work}/plugin-{r}.json"))["mean_call_us"] / 1e6
    sub = {x["command"]: x["median"] for x in json.load(open(f"{work}/sub-{r}.json"))["results"]}
    rows.append((plugin, sub["jq"], sub["python3"]))
plugin = statistics.median(r[0] for r in rows)
jq = statistics.median(r[1] for r in rows)
py = statistics.median(r[2] for r in rows)
vs_jq = statistics.median(r[0] / r[1] for r in rows)
vs_py = statistics.median(r[0] / r[2] for r in rows)
spread = ", ".join(f"{r[0]/r[1]:.3f}" for r in rows)
verdict = "meets" if vs_jq <= 0.1 else "misses"
section = "\n".join([
    "## Plugin call vs subprocess",
    "",
    f"`benches/plugins.sh {calls}` ({rounds} rounds; each round: {calls} in-process `verify` calls of the cached "
    f"`metrics-threshold` plugin, and hyperfine medians of 200 runs of each subprocess; {platform.machine()}, "
    f"measured {datetime.date.today()}). Ratios are medians over the rounds.",
    "",
    "| check | time per check | vs jq subprocess |",
    "|---|---|---|",
    f"| metrics-threshold plugin (cached, instantiate + verify) | {plugin*1e6:.0f} µs | {vs_jq:.3f}x |",
    f"| `jq -e '.score >= 0.8' m.json` | {jq*1e6:.0f} µs | 1.000x |",
    f"| python3 reading the same file | {py*1e6:.0f} µs | {py/jq:.2f}x |",
    "",
    f"Target: the cached plugin call at most a tenth of the jq subprocess. It is {vs_jq:.3f}x jq "
    f"(rounds: {spread}) and {vs_py:.3f}x python3: it {verdict} the target.",
    "",
])
print(section)
PY

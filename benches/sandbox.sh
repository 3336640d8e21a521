#!/usr/bin/env bash
# Start-up cost of one confined command, side by side in one run:
#   plain spawn of /bin/true  vs  fsm-runner sandbox exec -- /bin/true  vs  bwrap with similar
#   isolation (user, mount and network namespaces; read-only system dirs; writable repo).
# Writes the table and the ratios to docs/performance.md (section "Sandbox start-up").
# Usage: benches/sandbox.sh [runs]   (needs hyperfine and bubblewrap; installs them with apt-get)
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-200}"

source benches/lib.sh
ensure_tools "hyperfine" "bwrap:bubblewrap"
cargo build --release --quiet
bin="$PWD/target/release/fsm-runner"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
repo="$work/repo"; mkdir -p "$repo"; git -C "$repo" init -q

ro=()
for d in /usr /bin /sbin /lib /lib32 /lib64 /etc; do [ -e "$d" ] && ro+=(--ro-bind "$d" "$d"); done
bwrap_cmd="bwrap --unshare-user --unshare-net --unshare-ipc --die-with-parent --new-session ${ro[*]} --tmpfs /tmp --bind $repo $repo --proc /proc --dev /dev --chdir $repo /bin/true"

# Several rounds, so that load that comes and goes on a shared machine hits every command;
# the ratio reported is the median over rounds.
rounds=5
cd "$repo"
for round in $(seq 1 $rounds); do
  hyperfine --warmup 10 --runs "$runs" -N --export-json "$work/result-$round.json" \
    -n plain "/bin/true" \
    -n "fsm-runner sandbox exec" "$bin sandbox exec -- /bin/true" \
    -n "fsm-runner sandbox exec --sandbox off" "$bin sandbox exec --sandbox off -- /bin/true" \
    -n bwrap "$bwrap_cmd" >/dev/null
done
cd - >/dev/null

python3 - "$runs" "$rounds" "$work"/result-*.json <<'PY' | write_section docs/performance.md
import json, re, statistics, sys, platform, datetime
runs, rounds, files = sys.argv[1], sys.argv[2], sys.argv[3:]
per_round = [{r["command"]: r["median"] for r in json.load(open(f))["results"]} for f in files]
names = list(per_round[0])
med = {n: statistics.median(r[n] for r in per_round) for n in names}
vs_bwrap = {n: statistics.median(r[n] / r["bwrap"] for r in per_round) for n in names}
vs_plain = {n: statistics.median(r[n] / r["plain"] for r in per_round) for n in names}
lines = [
    "## Sandbox start-up",
    "",
    f"`benches/sandbox.sh {runs}` ({rounds} rounds of hyperfine, {runs} runs per command per round; "
    f"{platform.machine()}, measured {datetime.date.today()}). Ratios are medians over the rounds of "
    "each round's ratio; the machine is shared and noisy, so read the ratios, not the times.",
    "",
    "| command | median time | vs plain spawn | vs bwrap |",
    "|---|---|---|---|",
]
for n in names:
    lines.append(f"| {n} | {med[n]*1000:.2f} ms | {vs_plain[n]:.1f}x | {vs_bwrap[n]:.2f}x |")
ours = vs_bwrap["fsm-runner sandbox exec"]
spread = ", ".join(f"{r['fsm-runner sandbox exec']/r['bwrap']:.2f}" for r in per_round)
verdict = "meets" if ours <= 1.0 else "misses"
lines += ["", f"Target: no slower than bwrap. `sandbox exec` is {ours:.2f}x bwrap (rounds: {spread}): it {verdict} the target.",
          "Besides the namespaces bwrap sets up, it parses the policy, locates toolchains, and applies "
          "Landlock, seccomp and rlimits.", ""]
section = "\n".join(lines)
print(section)
PY

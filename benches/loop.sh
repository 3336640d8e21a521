#!/usr/bin/env bash
# Loop iterations against the scripted model, side by side with the pipeline's commands alone,
# on a small Python repo whose tests pass (`python3 -m unittest -q`):
#   steps:  `fsm-runner run` on a plan of $steps steps ($steps+1 iterations, each: plan update,
#           execute, confined verification, mark done; the last one verifies and ends)
#           vs  the tests command run $steps+1 times in one bash loop
#   single: `fsm-runner run --max-iters 1` on a finished plan (process start-up included)
#           vs  the tests command once, and `fsm-runner verify` once
# Writes the ratios to docs/performance.md (section "Loop iteration vs its commands").
# Usage: benches/loop.sh [runs] [steps]   (needs hyperfine; installs it with apt-get)
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-10}"
steps="${2:-10}"
rounds=5
warmup_steps=1
warmup_single=3

source benches/lib.sh
ensure_tools "hyperfine"
cargo build --release --quiet
bin="$PWD/target/release/fsm-runner"

work=$(mktemp -d)
server_pid=""
trap '[ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; rm -rf "$work"' EXIT
tests_cmd="python3 -m unittest -q"

make_repo() {  # make_repo DIR PLAN_TEXT
  mkdir -p "$1"
  printf 'def add(a, b):\n    return a + b\n' > "$1/calc.py"
  printf 'import unittest\nfrom calc import add\n\n\nclass T(unittest.TestCase):\n    def test_add(self):\n        self.assertEqual(add(2, 3), 5)\n' > "$1/test_calc.py"
  printf 'version: 1\ntests:\n  cmds:\n    - %s\n' "$tests_cmd" > "$1/pipeline.yml"
  printf '%s' "$2" > "$1/PLAN.md"
  printf '__pycache__/\n.aider_fsm/\n' > "$1/.gitignore"
  git -C "$1" init -q && git -C "$1" add -A
  git -C "$1" -c user.name=b -c user.email=b@example.com commit -qm bench
}

# The plans and the replies, generated together so that every SEARCH text matches.
python3 - "$work" "$steps" "$runs" "$rounds" "$warmup_steps" "$warmup_single" <<'PY'
import json, sys
work, steps, runs, rounds, warm_steps, warm_single = sys.argv[1], *map(int, sys.argv[2:])
step = lambda i: f"- [ ] (STEP_ID={i:03}) step {i}\n"
backlog = "".join(step(i) for i in range(2, steps + 1))
open(f"{work}/plan-steps.md", "w").write(
    f"# PLAN\n\n## Next (exactly ONE item)\n{step(1)}\n## Backlog\n{backlog}\n## Done\n")
open(f"{work}/plan-done.md", "w").write(
    "# PLAN\n\n## Next (exactly ONE item)\n\n## Backlog\n\n## Done\n- [x] (STEP_ID=001) add() adds\n")
block = lambda s, r: f"PLAN.md\n```\n<<<<<<< SEARCH\n{s}=======\n{r}>>>>>>> REPLACE\n```\n"
no_change = {"content": "The plan is right; no changes."}
run = []
for i in range(1, steps + 1):
    nxt = step(i + 1) if i < steps else ""
    mark = block(f"## Next (exactly ONE item)\n{step(i)}", f"## Next (exactly ONE item)\n{nxt}")
    if i < steps:
        mark += block(f"## Backlog\n{step(i + 1)}", "## Backlog\n")
    mark += block("## Done\n", f"## Done\n- [x] (STEP_ID={i:03}) step {i}\n")
    run += [no_change, {"content": f"Step {i} needs no file change."}, {"content": mark}]
run.append(no_change)
replies = []
for _ in range(rounds):
    replies += run * (warm_steps + runs) + [no_change] * (warm_single + runs)
json.dump({"label": "benchmark", "replies": replies}, open(f"{work}/script.json", "w"))
PY
make_repo "$work/steps" "$(cat "$work/plan-steps.md")"
make_repo "$work/single" "$(cat "$work/plan-done.md")"

"$bin" scripted-model --script "$work/script.json" > "$work/server.txt" 2>/dev/null &
server_pid=$!
for _ in $(seq 1 100); do grep -q OPENAI_API_BASE "$work/server.txt" && break; sleep 0.05; done
base=$(sed -n 's/.*OPENAI_API_BASE=\([^ ]*\).*/\1/p' "$work/server.txt")
export OPENAI_API_KEY=bench OPENAI_API_BASE="$base"

iterations=$((steps + 1))
run_steps="$bin run --repo $work/steps --pipeline $work/steps/pipeline.yml --env-file '' --max-iters $((iterations + 1))"
run_single="$bin run --repo $work/single --pipeline $work/single/pipeline.yml --env-file '' --max-iters 1"
verify_single="$bin verify --repo $work/single --pipeline $work/single/pipeline.yml --env-file ''"
reset="git -C $work/steps checkout -q PLAN.md && rm -rf $work/steps/.aider_fsm"
for round in $(seq 1 $rounds); do
  (cd "$work/steps" && hyperfine --warmup $warmup_steps --runs "$runs" --prepare "$reset" \
    --export-json "$work/steps-$round.json" \
    -n "fsm-runner run: $steps steps, $iterations iterations" "$run_steps" \
    -n "the tests command $iterations times" "bash -c 'for i in \$(seq $iterations); do $tests_cmd; done'" >/dev/null)
  (cd "$work/single" && hyperfine --warmup $warmup_single --runs "$runs" \
    --export-json "$work/single-$round.json" \
    -n "fsm-runner run --max-iters 1 (one iteration, start-up included)" "$run_single" \
    -n "fsm-runner verify" "$verify_single" \
    -n "the tests command once" "bash -c '$tests_cmd'" >/dev/null)
done

python3 - "$runs" "$rounds" "$steps" "$work" <<'PY' | write_section docs/performance.md
import json, re, statistics, sys, platform, datetime
runs, rounds, steps, work = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
def load(kind):
    return [{r["command"]: r["median"] for r in json.load(open(f"{work}/{kind}-{i}.json"))["results"]}
            for i in range(1, rounds + 1)]
lines = [
    "## Loop iteration vs its commands",
    "",
    f"`benches/loop.sh {runs} {steps}` ({rounds} rounds of hyperfine, {runs} runs per command per round; "
    f"{platform.machine()}, measured {datetime.date.today()}). A small Python repo whose tests pass; the "
    "model is the scripted server on loopback. An iteration is: state.json and the run log after every "
    "transition, the snapshot (git status), a plan-update call, the backstop, an execute call, the "
    "confined verification with all its artifacts, a mark-done call. Ratios are medians over the "
    "rounds of each round's ratio; read the ratios, not the times.",
    "",
    "| command | median time | vs the same tests commands alone |",
    "|---|---|---|",
]
results = {}
for kind in ("steps", "single"):
    per_round = load(kind)
    names = list(per_round[0])
    alone = names[-1]
    for n in names:
        med = statistics.median(r[n] for r in per_round)
        ratio = statistics.median(r[n] / r[alone] for r in per_round)
        results[(kind, n)] = (ratio, [r[n] / r[alone] for r in per_round])
        lines.append(f"| {n} | {med*1000:.1f} ms | {ratio:.2f}x |")
(steps_ratio, steps_spread), = [v for (k, n), v in results.items() if k == "steps" and n.startswith("fsm-runner")]
single = [v for (k, n), v in results.items() if k == "single" and "max-iters" in n][0][0]
verdict = "meets" if steps_ratio <= 1.2 else "misses"
lines += ["",
    f"Target: an iteration costs at most 1.2x the commands it runs. Over a {steps}-step run an iteration "
    f"costs {steps_ratio:.2f}x its commands (rounds: {', '.join(f'{x:.2f}' for x in steps_spread)}): it "
    f"{verdict} the target. A run of a single iteration costs {single:.2f}x, because it also pays the "
    "process start-up once (see below).", ""]
section = "\n".join(lines)
print(section)
PY

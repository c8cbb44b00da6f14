#!/usr/bin/env bash
# Side-by-side speed: lcode bench and llama.cpp's llama-bench on the same GGUF file, same
# threads, alternating in one run (llama.cpp, lcode, llama.cpp, lcode, ...), so a change
# in the machine's load lands on both; the medians and their ratios are the result.
# llama.cpp is built from the copy vendored in the llama-cpp-python==0.3.36 source
# package (scripts/llama_cpp_build.sh), for comparison only.
#
# usage: scripts/llama_cpp_compare.sh TIER [THREADS] [ROUNDS]
# env:   LLAMA_BENCH=path/to/llama-bench (else built under ~/.cache/lcode/llama.cpp)
set -euo pipefail
tier=${1:?usage: scripts/llama_cpp_compare.sh TIER [THREADS] [ROUNDS]}
threads=${2:-2}
rounds=${3:-3}
cd "$(dirname "$0")/.."
lcode=./target/release/lcode
[ -x "$lcode" ] || cargo build --release --locked
model=$("$lcode" models --json | python3 -c "import json,sys; [print(r['path']) for r in map(json.loads, sys.stdin) if r.get('tier')=='$tier']")
[ -f "$model" ] || "$lcode" models pull "$tier"

LLAMA_BENCH=${LLAMA_BENCH:-$(scripts/llama_cpp_build.sh llama-bench)}

echo "== $(date -u +%Y-%m-%dT%H:%MZ) $tier ($model), $threads threads, $rounds rounds"
echo "   CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
echo "   llama.cpp: llama-bench -t $threads -p 512 -n 128 -r 1 (pp512, tg128 from an empty context)"
echo "   lcode:     lcode bench --ctx 512 (prefill at 512, decode of 128 tokens after them)"
results=$(mktemp)
trap 'rm -f "$results"' EXIT
for round in $(seq "$rounds"); do
  "$LLAMA_BENCH" -m "$model" -t "$threads" -p 512 -n 128 -r 1 -o json 2>/dev/null |
    python3 -c "
import json, sys
runs = json.load(sys.stdin)
pp = next(r['avg_ts'] for r in runs if r['n_prompt'] > 0)
tg = next(r['avg_ts'] for r in runs if r['n_gen'] > 0)
print('llama', pp, tg)" >>"$results"
  "$lcode" bench --model "$tier" --ctx 512 --threads "$threads" --json 2>/dev/null |
    python3 -c "
import json, sys
r = json.loads(sys.stdin.readline())
print('lcode', r['prefill_tps'], r['decode_tps'], r['kernels'])" >>"$results"
  tail -2 "$results" | sed "s/^/   round $round: /"
done
python3 - "$results" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
med = lambda who, i: statistics.median(float(r[i]) for r in rows if r[0] == who)
lp, ld, cp, cd = med("llama", 1), med("llama", 2), med("lcode", 1), med("lcode", 2)
kernels = next(r[3] for r in rows if r[0] == "lcode")
print(f"   medians: llama.cpp pp512 {lp:.1f}, tg128 {ld:.1f}; lcode ({kernels}) prefill {cp:.1f}, decode {cd:.1f} tok/s")
print(f"   lcode / llama.cpp: prefill {cp / lp:.2f}x, decode {cd / ld:.2f}x")
EOF

#!/usr/bin/env bash
# Side-by-side speed: lcode bench and llama.cpp's llama-bench on the same GGUF file, same
# threads, one after the other in one run. llama.cpp is built from the copy vendored in the
# llama-cpp-python==0.3.36 source package (scripts/llama_cpp_build.sh), for comparison only.
#
# usage: scripts/llama_cpp_compare.sh TIER [THREADS]
# env:   LLAMA_BENCH=path/to/llama-bench (else built under ~/.cache/lcode/llama.cpp)
set -euo pipefail
tier=${1:?usage: scripts/llama_cpp_compare.sh TIER [THREADS]}
threads=${2:-2}
cd "$(dirname "$0")/.."
lcode=./target/release/lcode
[ -x "$lcode" ] || cargo build --release --locked
model=$("$lcode" models --json | python3 -c "import json,sys; [print(r['path']) for r in map(json.loads, sys.stdin) if r.get('tier')=='$tier']")
[ -f "$model" ] || "$lcode" models pull "$tier"

LLAMA_BENCH=${LLAMA_BENCH:-$(scripts/llama_cpp_build.sh llama-bench)}

echo "== $(date -u +%Y-%m-%dT%H:%MZ) $tier ($model), $threads threads"
echo "-- llama.cpp llama-bench -t $threads -p 512 -n 128"
"$LLAMA_BENCH" -m "$model" -t "$threads" -p 512 -n 128 -r 2 -o md
echo "-- lcode bench --ctx 512 (prefill_tps at 512, decode_tps over 128 tokens)"
"$lcode" bench --model "$tier" --ctx 512 --threads "$threads"

#!/usr/bin/env bash
# Side-by-side speed: lcode bench and llama.cpp's llama-bench on the same GGUF file, same
# threads, one after the other in one run. llama.cpp is built from the copy vendored in the
# llama-cpp-python==0.3.36 source package, for comparison only (never committed).
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

if [ -z "${LLAMA_BENCH:-}" ]; then
  root=~/.cache/lcode/llama.cpp
  LLAMA_BENCH=$root/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin/llama-bench
  if [ ! -x "$LLAMA_BENCH" ]; then
    mkdir -p "$root" && cd "$root"
    pip download --no-deps --no-binary llama-cpp-python llama-cpp-python==0.3.36 -d . >&2
    tar xzf llama_cpp_python-0.3.36.tar.gz
    cd llama_cpp_python-0.3.36/vendor/llama.cpp
    # AMX is compiled in by -march=native on CPUs that report it, and crashes where the
    # kernel does not enable it: keep it off.
    noamx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
    cmake -B build -G Ninja -DGGML_NATIVE=ON -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF \
      -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF "-DCMAKE_C_FLAGS=$noamx" "-DCMAKE_CXX_FLAGS=$noamx" >&2
    cmake --build build -j"$(nproc)" --target llama-bench >&2
    cd - >/dev/null
  fi
fi

echo "== $(date -u +%Y-%m-%dT%H:%MZ) $tier ($model), $threads threads"
echo "-- llama.cpp llama-bench -t $threads -p 512 -n 128"
"$LLAMA_BENCH" -m "$model" -t "$threads" -p 512 -n 128 -r 2 -o md
echo "-- lcode bench --ctx 512 (prefill_tps at 512, decode_tps over 128 tokens)"
"$lcode" bench --model "$tier" --ctx 512 --threads "$threads"

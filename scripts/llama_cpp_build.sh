#!/usr/bin/env bash
# Build one llama.cpp tool (llama-bench, llama-server) from the copy vendored in the
# llama-cpp-python==0.3.36 source package, under ~/.cache/lcode/llama.cpp, for side-by-side
# comparisons only (never committed). Prints the tool's path on stdout.
#
# usage: scripts/llama_cpp_build.sh TARGET
set -euo pipefail
target=${1:?usage: scripts/llama_cpp_build.sh llama-bench|llama-server}
root=~/.cache/lcode/llama.cpp
src=$root/llama_cpp_python-0.3.36/vendor/llama.cpp
bin=$src/build/bin/$target
if [ ! -x "$bin" ]; then
  command -v cmake >/dev/null && command -v ninja >/dev/null || pip install -q cmake ninja >&2
  mkdir -p "$root"
  if [ ! -d "$src" ]; then
    (cd "$root" && pip download --no-deps --no-binary llama-cpp-python llama-cpp-python==0.3.36 -d . >&2 \
      && tar xzf llama_cpp_python-0.3.36.tar.gz)
  fi
  # AMX is compiled in by -march=native on CPUs that report it, and crashes where the
  # kernel does not enable it: keep it off.
  noamx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
  cmake -S "$src" -B "$src/build" -G Ninja -DGGML_NATIVE=ON -DCMAKE_BUILD_TYPE=Release \
    -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=ON \
    "-DCMAKE_C_FLAGS=$noamx" "-DCMAKE_CXX_FLAGS=$noamx" >&2
  cmake --build "$src/build" -j"$(nproc)" --target "$target" >&2
fi
echo "$bin"

#!/usr/bin/env bash
# deploy.sh TARGET: build and copy to TARGET
set -euo pipefail
target=$1
mkdir -p "$target"
echo "built" > "$target/app.txt"
echo "deployed to $target"

#!/usr/bin/env bash
# Run in the edited repository; exit 0 when the task is done.
set -euo pipefail
dir=$(mktemp -d)
printf 'hello\n' > "$dir/my notes.txt"
bash backup.sh "$dir/my notes.txt" >/dev/null
test "$(cat "$dir/my notes.txt.bak")" = "hello"

#!/usr/bin/env bash
# Run in the edited repository; exit 0 when the task is done.
set -euo pipefail
dir=$(mktemp -d)
out=$(bash deploy.sh --dry-run "$dir/site")
test "$out" = "would deploy to $dir/site"
test ! -e "$dir/site"
bash deploy.sh "$dir/site" >/dev/null
test -f "$dir/site/app.txt"

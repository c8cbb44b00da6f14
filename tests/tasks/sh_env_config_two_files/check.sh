#!/usr/bin/env bash
# Run in the edited repository; exit 0 when the task is done.
set -euo pipefail
grep -qx 'LOG_LEVEL=debug' config/app.env
out=$(bash run.sh)
test "$out" = "$(printf 'starting demo\nlog level debug')"

#!/usr/bin/env bash
# Run in the edited repository; exit 0 when the task is done.
set -euo pipefail
test "$(python3 main.py)" = "box: 3 items"

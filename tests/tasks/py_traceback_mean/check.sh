#!/usr/bin/env bash
# Run in the edited repository; exit 0 when the task is done.
set -euo pipefail
python3 - <<'EOF'
from stats import mean
from report import summary
assert mean([]) == 0.0
assert mean([1, 2, 3]) == 2.0
assert summary([]) == "average 0.0"
EOF

#!/usr/bin/env bash
# Run in the edited repository; exit 0 when the task is done.
set -euo pipefail
! grep -rn "calc_total" --include=*.py .
python3 - <<'EOF'
from shop import compute_total
from app import checkout
from invoice import invoice_total
assert compute_total([1, 2]) == 3
assert checkout([{"price": 10}]) == 12.0
assert invoice_total([{"amount": 4}, {"amount": 1}]) == 5
EOF

#!/usr/bin/env bash
# Run in the edited repository; exit 0 when the task is done.
set -euo pipefail
python3 - <<'EOF'
from inventory import in_stock, restock
assert in_stock("apple") is True
assert in_stock("pear") is False
assert in_stock("kiwi") is False
restock("kiwi", 2)
assert in_stock("kiwi") is True
EOF

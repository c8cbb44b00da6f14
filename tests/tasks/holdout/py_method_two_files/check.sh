#!/usr/bin/env bash
# Run in the edited repository; exit 0 when the task is done.
set -euo pipefail
python3 - <<'EOF'
from shapes import Rectangle
from report import total_area, total_perimeter
assert Rectangle(2, 3).area() == 6
assert total_area([Rectangle(2, 3), Rectangle(1, 1)]) == 7
assert total_perimeter([Rectangle(1, 1)]) == 4
EOF

#!/usr/bin/env bash
# Run in the edited repository; exit 0 when the task is done.
set -euo pipefail
test "$(python3 cli.py ana)" = "Hello, ana."
test "$(python3 cli.py --loud ana)" = "HELLO, ANA."
python3 -c 'from greet import greet; assert greet("bo", loud=True) == "HELLO, BO."'

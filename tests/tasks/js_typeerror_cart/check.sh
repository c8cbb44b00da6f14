#!/usr/bin/env bash
# Run in the edited repository; exit 0 when the task is done.
set -euo pipefail
test "$(node main.js)" = "0"
node -e 'const {total}=require("./cart"); if (total({items:[{price:2,qty:3}]})!==6) process.exit(1)'

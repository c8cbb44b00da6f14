#!/usr/bin/env bash
# Run in the edited repository; exit 0 when the task is done.
set -euo pipefail
test "$(node cli.js)" = "$(printf 'ana: 3\nbo: 5')"
test "$(node cli.js --json)" = '[{"name":"ana","score":3},{"name":"bo","score":5}]'
node -e 'const r=require("./report"); if (typeof r.toJSON !== "function") process.exit(1)'

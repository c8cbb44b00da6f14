#!/usr/bin/env bash
# Run in the edited repository; exit 0 when the task is done.
set -euo pipefail
! grep -rn "formatPrice" lib
node -e '
const { formatMoney } = require("./lib/format");
const { line } = require("./lib/cart");
if (formatMoney(1234) !== "$12.34") process.exit(1);
if (line({ name: "tea", cents: 250 }) !== "tea $2.50") process.exit(1);'

#!/usr/bin/env bash
# Run in the edited repository; exit 0 when the task is done.
set -euo pipefail
node -e '
const { options } = require("./config");
const o = options();
if (o.timeoutMs !== 5000 || o.backoff !== 2 || o.retries !== 3) process.exit(1);
if (options({ backoff: 9 }).backoff !== 9) process.exit(1);'

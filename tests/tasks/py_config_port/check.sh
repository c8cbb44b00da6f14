#!/usr/bin/env bash
# Run in the edited repository; exit 0 when the task is done.
set -euo pipefail
python3 -c 'from server import address; assert address() == "http://127.0.0.1:8080/", address()'
grep -q '"8080:8080"' docker-compose.yml
! grep -q 8000 docker-compose.yml

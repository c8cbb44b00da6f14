#!/usr/bin/env bash
# Prints the settings the app would start with.
set -euo pipefail
cd "$(dirname "$0")"
APP_NAME=demo
echo "starting $APP_NAME"

#!/usr/bin/env bash
# backup.sh FILE: copy FILE to FILE.bak
set -e
src=$1
cp $src $src.bak
echo "backed up $src"

#!/usr/bin/env bash
# tools/soak.sh DURATION (90s, 2m, 1h): builds the release edgebone and soaks
# `edgebone run` with faults for DURATION (tools/soak.py: what runs, what is
# checked); prints samples every 10 s and a verdict, exit code 1 when it fails.
# EDGEBONE_BIN=path skips the build; SOAK_WORK=dir keeps the config and the log there.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -ne 1 ]; then
    echo "usage: tools/soak.sh DURATION   (e.g. 2m, 1h)" >&2
    exit 2
fi
if [ -z "${EDGEBONE_BIN:-}" ]; then
    cargo build --release -p edgebone-firmware
    EDGEBONE_BIN="${CARGO_TARGET_DIR:-target}/release/edgebone"
fi
exec python3 tools/soak.py "$1" --bin "$EDGEBONE_BIN" ${SOAK_WORK:+--work "$SOAK_WORK"}

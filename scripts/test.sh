#!/usr/bin/env bash
# The whole test suite: the pinned protocol schema, one systemd user manager for the tests
# that need it, then every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/fetch-protocol-schema.sh >/dev/null
exec scripts/with-systemd-user.sh cargo test --workspace --locked "$@"

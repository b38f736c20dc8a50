#!/usr/bin/env python3
"""Builds crates/molt/tests/fixtures/openclaw-2026.5/ (OpenClaw's older, file-based layout)
from the SQLite fixture crates/molt/tests/fixtures/openclaw-2026.9/ that
scripts/openclaw-fixtures.sh made with the real OpenClaw, so both fixtures hold the same
agents, sessions, messages and cron jobs.

    python3 scripts/openclaw-fixtures-2026.5.py

The older layout (see docs/openclaw-state.md):
  openclaw.json + models.json5            config; agents as the `agents.list` array
  agents/<agentId>/sessions/sessions.json { "<sessionKey>": SessionEntry, ... }
  agents/<agentId>/sessions/<sessionId>.jsonl  one transcript event per line, file order
  cron/jobs.json                          { "version": 1, "jobs": [CronJob with inline state] }
  workspace*/                             the agents' workspace files
Transcript lines are the `event_json` rows of `transcript_events` in `seq` order (2026.9 kept
the JSONL entry format); session entries are `session_nodes.entry_json` without the bulky,
machine-specific `skillsSnapshot`; jobs are `cron_jobs.job_json` with `state_json` as `state`,
user jobs only (system jobs, those with a `declaration_key`, are recreated by OpenClaw).
Deterministic: re-running gives the same bytes.
"""
import json
import os
import re
import shutil
import sqlite3
import sys

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
src = os.path.join(root, "crates/molt/tests/fixtures/openclaw-2026.9")
out = os.path.join(root, "crates/molt/tests/fixtures/openclaw-2026.5")


def ro(path):
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def write_json(path, value):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2, ensure_ascii=False)
        f.write("\n")


def main():
    if not os.path.isdir(src):
        sys.exit(f"missing {src}; run scripts/openclaw-fixtures.sh first")
    readme = os.path.join(out, "README.md")
    kept = open(readme, encoding="utf-8").read() if os.path.exists(readme) else None
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    if kept is not None:
        open(readme, "w", encoding="utf-8").write(kept)

    # Config: the same content, with agents in the older `agents.list` array shape.
    config = open(os.path.join(src, "openclaw.json"), encoding="utf-8").read()
    config = re.sub(
        r"    entries: \{\n.*?\n    \},\n",
        '    list: [\n'
        '      { id: "main", default: true, name: "Main", workspace: "~/.openclaw/workspace" },\n'
        '      { id: "writer", name: "Writer", workspace: "~/.openclaw/workspace-writer", model: "fake/fake-2" },\n'
        "    ],\n",
        config,
        flags=re.S,
    )
    # `agents.ownership` is 2026.9's replacement for the `default` marker: drop it (and its comment).
    config = re.sub(r"    //[^\n]*\n    ownership: \"explicit\",\n", "", config)
    if "list: [" not in config or "ownership" in config:
        sys.exit("could not rewrite agents.entries in openclaw.json")
    open(os.path.join(out, "openclaw.json"), "w", encoding="utf-8").write(config)
    shutil.copy(os.path.join(src, "models.json5"), os.path.join(out, "models.json5"))
    for ws in ("workspace", "workspace-writer"):
        shutil.copytree(os.path.join(src, ws), os.path.join(out, ws))

    # Sessions: one sessions.json and one JSONL transcript per session, per agent.
    agents_dir = os.path.join(src, "agents")
    for agent in sorted(os.listdir(agents_dir)):
        db = ro(os.path.join(agents_dir, agent, "agent", "openclaw-agent.sqlite"))
        sessions_dir = os.path.join(out, "agents", agent, "sessions")
        store = {}
        for key, session_id, entry in db.execute(
            "SELECT session_key, current_session_id, entry_json FROM session_nodes ORDER BY session_key"
        ):
            entry = json.loads(entry)
            entry.pop("skillsSnapshot", None)
            entry["sessionId"] = session_id
            store[key] = entry
            rows = db.execute(
                "SELECT event_json FROM transcript_events WHERE session_id = ? ORDER BY seq",
                (session_id,),
            ).fetchall()
            if any(r[0] is None for r in rows):
                sys.exit(f"{agent}/{session_id}: zstd-compressed events are not handled")
            os.makedirs(sessions_dir, exist_ok=True)
            with open(os.path.join(sessions_dir, f"{session_id}.jsonl"), "w", encoding="utf-8") as f:
                for (event,) in rows:
                    f.write(json.dumps(json.loads(event), ensure_ascii=False, separators=(",", ":")))
                    f.write("\n")
        write_json(os.path.join(sessions_dir, "sessions.json"), store)
        db.close()

    # Cron: the user-created jobs, with their state inline.
    db = ro(os.path.join(src, "state", "openclaw.sqlite"))
    jobs = []
    for job, state in db.execute(
        "SELECT job_json, state_json FROM cron_jobs WHERE declaration_key IS NULL ORDER BY sort_order"
    ):
        job = json.loads(job)
        job["state"] = json.loads(state) if state else {}
        job.setdefault("updatedAtMs", job.get("createdAtMs"))
        jobs.append(job)
    db.close()
    write_json(os.path.join(out, "cron", "jobs.json"), {"version": 1, "jobs": jobs})
    print(f"wrote {out}")


main()

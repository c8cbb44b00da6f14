#!/usr/bin/env python3
"""Repository tasks through the agent: small real repositories with a request or a
pasted error each, in Python, Rust, JavaScript, Go and shell.

Each task under tests/tasks/NAME/ (the held-out ones under tests/tasks/holdout/NAME/):
  repo/       the repository's files
  prompt.txt  what the user types
  check.sh    run in the edited repository; exit 0 when the task is done
  tests.txt   files restored from repo/ before the check, so editing a test does not count

For each task the repository is copied to a temporary git repo and lcode runs

    lcode exec --model TIER --approve all --json "$(cat prompt.txt)"

(commands, the project's tests among them, run sandboxed), then the listed test files
are restored and check.sh runs (120 s limit).

With --bare: the baseline, the bare model asked once, greedy, through `lcode generate`
with the chat template: the repository's files and the request in one message, asked
for every changed file as its path on a line and the whole new file in a code block;
those blocks are written and the same check runs.

Prints per task: pass/fail, seconds (model load included), replies, malformed replies,
prompt tokens prefilled and reused; then the pass count, the well-formed rate, and the
median seconds. --validate checks that every task's check fails on the unedited
repository (a check that passes without the fix cannot tell anything).

--log DIR keeps each task's lcode output (and the check's) in DIR/NAME.txt.

usage: scripts/repo_tasks.py TIER [--bare] [--holdout] [--only NAME] [--lcode PATH] [--log DIR]
       scripts/repo_tasks.py --validate
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TASKS = ROOT / "tests" / "tasks"
CHECK_TIMEOUT = 120
AGENT_TIMEOUT = 900
GIT_ENV = {
    "GIT_AUTHOR_NAME": "lcode",
    "GIT_AUTHOR_EMAIL": "lcode@localhost",
    "GIT_COMMITTER_NAME": "lcode",
    "GIT_COMMITTER_EMAIL": "lcode@localhost",
}


def tasks(holdout):
    base = TASKS / "holdout" if holdout else TASKS
    return sorted(p for p in base.iterdir() if (p / "prompt.txt").exists())


def checkout(task, into):
    """The task's repository as a fresh git repo at `into`."""
    shutil.copytree(task / "repo", into, dirs_exist_ok=True)
    env = {**os.environ, **GIT_ENV}
    subprocess.run(["git", "init", "-q"], cwd=into, check=True, env=env)
    subprocess.run(["git", "add", "-A"], cwd=into, check=True, env=env)
    subprocess.run(["git", "commit", "-qm", "start"], cwd=into, check=True, env=env)


def check(task, repo):
    """Restore the task's test files, run check.sh; (passed, output)."""
    for line in (task / "tests.txt").read_text().splitlines():
        if line.strip():
            dst = repo / line.strip()
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(task / "repo" / line.strip(), dst)
    try:
        r = subprocess.run(
            ["bash", str(task / "check.sh")], cwd=repo, capture_output=True, text=True,
            timeout=CHECK_TIMEOUT,
        )
        return r.returncode == 0, (r.stdout + r.stderr)[-2000:]
    except subprocess.TimeoutExpired:
        return False, "check timed out"


def run_agent(lcode, tier, task, repo, env):
    """lcode exec on the task: (seconds, replies, malformed, prefilled, reused, output)."""
    prompt = (task / "prompt.txt").read_text()
    start = time.monotonic()
    try:
        r = subprocess.run(
            [lcode, "exec", "--model", tier, "--approve", "all", "--json", prompt],
            cwd=repo, capture_output=True, text=True, timeout=AGENT_TIMEOUT, env=env,
        )
        out = r.stdout
        if r.returncode == 1 and not out.strip():
            # lcode could not start (a model not installed, say): no task can run.
            sys.exit(f"lcode exec failed: {r.stderr.strip()}")
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
    secs = time.monotonic() - start
    replies = malformed = prefilled = reused = 0
    for line in out.splitlines():
        try:
            ev = json.loads(line)
        except json.JSONDecodeError:
            continue
        if ev.get("type") == "stats":
            replies += 1
            prefilled += ev.get("prompt_tokens", 0) - ev.get("reused_tokens", 0)
            reused += ev.get("reused_tokens", 0)
        elif ev.get("type") == "malformed":
            malformed += 1
    return secs, replies, malformed, prefilled, reused, out


BARE_ASK = (
    "\n\nReply with every file you change: its path on a line by itself, then the "
    "complete new file in a fenced code block."
)


def repo_text(repo):
    parts = []
    for p in sorted(repo.rglob("*")):
        if ".git" in p.parts or not p.is_file():
            continue
        rel = p.relative_to(repo).as_posix()
        try:
            parts.append(f"{rel}\n```\n{p.read_text()}```\n")
        except UnicodeDecodeError:
            continue
    return "\n".join(parts)


def looks_like_path(line):
    line = line.strip().strip("`*: ")
    return bool(line) and " " not in line and ("." in line or "/" in line)


def write_blocks(reply, repo):
    """Write each file the reply gives (a path line, or a path alone in a block or on a
    block's first line, then the fenced file) into the repo; how many. As lenient as the
    agent's own reading, so that the baseline is not lost to its format."""
    lines = reply.splitlines()
    blocks = []  # (line before the fence, lines inside)
    i = 0
    while i < len(lines):
        if lines[i].strip().startswith("```"):
            before = lines[i - 1] if i > 0 else ""
            j = i + 1
            while j < len(lines) and not lines[j].strip().startswith("```"):
                j += 1
            blocks.append((before, lines[i + 1:j]))
            i = j + 1
        else:
            i += 1
    written = 0
    pending = None
    for before, body in blocks:
        if len(body) == 1 and looks_like_path(body[0]):
            pending = body[0].strip().strip("`*: ")
            continue
        path = pending or (before.strip().strip("`*: ") if looks_like_path(before) else None)
        pending = None
        if path is None and body and looks_like_path(body[0]) and (repo / body[0].strip()).exists():
            path, body = body[0].strip(), body[1:]
        if not path or not body:
            continue
        path = path.removeprefix("./")
        target = (repo / path).resolve()
        if str(target).startswith(str(repo.resolve())):
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text("\n".join(body) + "\n")
            written += 1
    return written


def run_bare(lcode, tier, task, repo, env):
    prompt = repo_text(repo) + "\n" + (task / "prompt.txt").read_text() + BARE_ASK
    start = time.monotonic()
    r = subprocess.run(
        [lcode, "generate", "--model", tier, "--greedy", "-n", "2048", "--json",
         "--prompt", "-"],
        input=prompt, capture_output=True, text=True, timeout=AGENT_TIMEOUT, env=env,
    )
    secs = time.monotonic() - start
    try:
        out = json.loads(r.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        return secs, 1, 1, 0, 0, r.stdout + r.stderr
    written = write_blocks(out["text"], repo)
    stats = out.get("stats", {})
    prefilled = stats.get("prompt_tokens", 0) - stats.get("reused_tokens", 0)
    return secs, 1, 0 if written else 1, prefilled, stats.get("reused_tokens", 0), out["text"]


def validate():
    bad = 0
    for holdout in (False, True):
        for task in tasks(holdout):
            with tempfile.TemporaryDirectory() as d:
                repo = Path(d) / "repo"
                checkout(task, repo)
                passed, out = check(task, repo)
            state = "FAILS on the unedited repo (good)" if not passed else "PASSES UNEDITED"
            bad += passed
            print(f"{task.relative_to(TASKS)}: {state}")
    sys.exit(1 if bad else 0)


def main():
    args = sys.argv[1:]
    if "--validate" in args:
        validate()
    if not args or args[0].startswith("-"):
        sys.exit(__doc__)
    tier = args[0]
    bare = "--bare" in args
    holdout = "--holdout" in args
    only = args[args.index("--only") + 1] if "--only" in args else None
    lcode = args[args.index("--lcode") + 1] if "--lcode" in args else str(
        ROOT / "target" / "release" / "lcode")
    log = Path(args[args.index("--log") + 1]) if "--log" in args else None
    if log:
        log.mkdir(parents=True, exist_ok=True)
    run = run_bare if bare else run_agent
    rows = []
    with tempfile.TemporaryDirectory() as state:
        # A fresh conversation store and prompt-snapshot store for the run.
        env = {**os.environ, "LCODE_DATA_DIR": state, "LCODE_CACHE_DIR": state + "/cache",
               "LCODE_MODELS": os.environ.get(
                   "LCODE_MODELS", str(Path.home() / ".cache" / "lcode" / "models"))}
        for task in tasks(holdout):
            if only and task.name != only:
                continue
            with tempfile.TemporaryDirectory() as d:
                repo = Path(d) / "repo"
                checkout(task, repo)
                secs, replies, malformed, prefilled, reused, output = run(
                    lcode, tier, task, repo, env)
                passed, out = check(task, repo)
                if log:
                    (log / f"{task.name}.txt").write_text(f"{output}\n--- check ---\n{out}")
            rows.append((task.name, passed, secs, replies, malformed, prefilled, reused))
            print(f"  {task.name:28} {'PASS' if passed else 'fail'} {secs:6.1f} s  replies "
                  f"{replies}  malformed {malformed}  prefilled {prefilled}  reused {reused}",
                  flush=True)
    if not rows:
        sys.exit("no task ran")
    n = len(rows)
    passed = sum(r[1] for r in rows)
    replies = sum(r[3] for r in rows)
    malformed = sum(r[4] for r in rows)
    well = 100.0 * (replies - malformed) / max(replies, 1)
    median = statistics.median(r[2] for r in rows)
    kind = "bare model" if bare else "agent"
    part = "holdout" if holdout else "working set"
    print(f"\n{tier} {kind}, {part}: passed {passed}/{n} ({100.0 * passed / n:.0f}%); "
          f"well-formed replies {well:.1f}% ({replies - malformed}/{replies}); "
          f"median {median:.1f} s per task; prefilled {sum(r[5] for r in rows)}, "
          f"reused {sum(r[6] for r in rows)} tokens")


if __name__ == "__main__":
    main()

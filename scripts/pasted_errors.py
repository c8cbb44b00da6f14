#!/usr/bin/env python3
"""Pasted errors and a small feature request, on a real model, in temporary repos.

Four cases: a Python traceback whose paths come from another machine, a rustc error,
a node TypeError, and a one-function feature request. Each runs

    lcode exec --model TIER --approve all --test-cmd CMD --json "<pasted error> ..."

in a fresh git repo. Then the tests are restored from a pristine copy (editing a test
never counts), run, and the answer is checked for the right file and line.

usage: scripts/pasted_errors.py [TIER] [--lcode PATH]      (TIER defaults to quality)
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES = [
    {
        "name": "python traceback, paths from another machine",
        "files": {
            "calc/__init__.py": "",
            "calc/stats.py": (
                "def mean(xs):\n"
                "    \"\"\"The average of xs; 0.0 for an empty list.\"\"\"\n"
                "    return sum(xs) / len(xs)\n"
            ),
            "tests/__init__.py": "",
            "tests/test_stats.py": (
                "import unittest\n\nfrom calc.stats import mean\n\n\n"
                "class T(unittest.TestCase):\n"
                "    def test_mean(self):\n        self.assertEqual(mean([1, 2, 3]), 2)\n\n"
                "    def test_empty(self):\n        self.assertEqual(mean([]), 0.0)\n"
            ),
        },
        "tests": ["tests/test_stats.py"],
        "test_cmd": "python3 -m unittest -q",
        "message": (
            "I get this in production:\n\n"
            "Traceback (most recent call last):\n"
            "  File \"/srv/deploy/app/tests/test_stats.py\", line 11, in test_empty\n"
            "    self.assertEqual(mean([]), 0.0)\n"
            "  File \"/srv/deploy/app/calc/stats.py\", line 3, in mean\n"
            "    return sum(xs) / len(xs)\n"
            "ZeroDivisionError: division by zero\n"
        ),
        "expect_file": "stats.py",
        "expect_line": "3",
    },
    {
        "name": "rustc error",
        "files": {
            "Cargo.toml": "[package]\nname = \"demo\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
            "src/lib.rs": (
                "/// The number of words in `text`.\n"
                "pub fn word_count(text: &str) -> usize {\n"
                "    let count: usize = text.split_whitespace().count() as i64;\n"
                "    count\n"
                "}\n"
            ),
            "tests/words.rs": (
                "#[test]\nfn counts() {\n    assert_eq!(demo::word_count(\"a b  c\"), 3);\n}\n"
            ),
        },
        "tests": ["tests/words.rs"],
        "test_cmd": "cargo test -q --offline",
        "message": (
            "cargo build fails:\n\n"
            "error[E0308]: mismatched types\n"
            " --> src/lib.rs:3:24\n"
            "  |\n"
            "3 |     let count: usize = text.split_whitespace().count() as i64;\n"
            "  |                -----   ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^ expected `usize`, found `i64`\n"
            "  |                |\n"
            "  |                expected due to this\n"
        ),
        "expect_file": "lib.rs",
        "expect_line": "3",
    },
    {
        "name": "node TypeError",
        "files": {
            "lib/cart.js": (
                "function total(cart) {\n"
                "  // The sum of price * qty over the cart's items; an empty cart costs 0.\n"
                "  return cart.items.reduce((sum, it) => sum + it.price * it.qty, 0);\n"
                "}\n\nmodule.exports = { total };\n"
            ),
            "test.js": (
                "const assert = require('assert');\nconst { total } = require('./lib/cart');\n"
                "assert.strictEqual(total({ items: [{ price: 2, qty: 3 }] }), 6);\n"
                "assert.strictEqual(total({}), 0);\nconsole.log('ok');\n"
            ),
        },
        "tests": ["test.js"],
        "test_cmd": "node test.js",
        "message": (
            "Running the tests on CI:\n\n"
            "/home/runner/work/shop/shop/lib/cart.js:3\n"
            "  return cart.items.reduce((sum, it) => sum + it.price * it.qty, 0);\n"
            "                    ^\n\n"
            "TypeError: Cannot read properties of undefined (reading 'reduce')\n"
            "    at total (/home/runner/work/shop/shop/lib/cart.js:3:21)\n"
            "    at Object.<anonymous> (/home/runner/work/shop/shop/test.js:4:20)\n"
        ),
        "expect_file": "cart.js",
        "expect_line": "3",
    },
    {
        "name": "feature request",
        "files": {
            "calc/__init__.py": "",
            "calc/stats.py": (
                "def mean(xs):\n"
                "    \"\"\"The average of xs.\"\"\"\n"
                "    return sum(xs) / len(xs)\n"
            ),
            "tests/__init__.py": "",
            "tests/test_median.py": (
                "import unittest\n\nfrom calc.stats import median\n\n\n"
                "class T(unittest.TestCase):\n"
                "    def test_odd(self):\n        self.assertEqual(median([3, 1, 2]), 2)\n\n"
                "    def test_even(self):\n        self.assertEqual(median([4, 1, 3, 2]), 2.5)\n"
            ),
        },
        "tests": ["tests/test_median.py"],
        "test_cmd": "python3 -m unittest -q",
        "message": "Add a function median(xs) to calc/stats.py that returns the median of a list of numbers (the mean of the two middle values for an even count).",
        "expect_file": "stats.py",
        "expect_line": None,
    },
]


def run_case(lcode, tier, case, data_dir):
    with tempfile.TemporaryDirectory() as d:
        repo = Path(d)
        subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
        for p, body in case["files"].items():
            (repo / p).parent.mkdir(parents=True, exist_ok=True)
            (repo / p).write_text(body)
        pristine = {p: case["files"][p] for p in case["tests"]}
        env = dict(os.environ, LCODE_DATA_DIR=data_dir, LCODE_CACHE_DIR=data_dir)
        start = time.monotonic()
        proc = subprocess.run(
            [lcode, "exec", "--model", tier, "--approve", "all", "--test-cmd",
             case["test_cmd"], "--json", case["message"]],
            cwd=repo, env=env, capture_output=True, text=True, timeout=1800,
        )
        secs = time.monotonic() - start
        answer = ""
        for line in proc.stdout.splitlines():
            try:
                ev = json.loads(line)
            except json.JSONDecodeError:
                continue
            if ev.get("type") == "text":
                answer += ev["delta"]
        for p, body in pristine.items():
            (repo / p).write_text(body)
        t = subprocess.run(case["test_cmd"], shell=True, cwd=repo, capture_output=True,
                           text=True, timeout=600)
        names_file = case["expect_file"] in answer
        names_line = case["expect_line"] is None or any(
            s in answer for s in (f":{case['expect_line']}", f"line {case['expect_line']}",
                                  f"Line {case['expect_line']}"))
        return {
            "name": case["name"], "exit": proc.returncode, "seconds": secs,
            "tests_pass": t.returncode == 0, "names_file": names_file,
            "names_line": names_line, "answer": answer.strip(),
            "test_output": (t.stdout + t.stderr).strip()[-400:],
        }


def main():
    args = sys.argv[1:]
    # This checkout's release build, not whatever `lcode` is on PATH.
    built = Path(__file__).resolve().parent.parent / "target" / "release" / "lcode"
    lcode = str(built) if built.exists() else "lcode"
    if "--lcode" in args:
        i = args.index("--lcode")
        lcode = str(Path(args[i + 1]).resolve())
        del args[i:i + 2]
    tier = args[0] if args else "quality"
    data_dir = tempfile.mkdtemp(prefix="lcode-pe-")
    ok = 0
    for case in CASES:
        r = run_case(lcode, tier, case, data_dir)
        good = r["tests_pass"] and r["names_file"] and r["names_line"]
        ok += good
        print(f"{'PASS' if good else 'fail'}  {r['name']}: tests {'pass' if r['tests_pass'] else 'FAIL'}, "
              f"names file {r['names_file']}, names line {r['names_line']}, exit {r['exit']}, "
              f"{r['seconds']:.0f} s", flush=True)
        print("    answer: " + r["answer"][:600].replace("\n", "\n    "), flush=True)
        if not r["tests_pass"]:
            print("    tests: " + r["test_output"].replace("\n", "\n    "), flush=True)
    print(f"\n{tier}: {ok}/{len(CASES)} cases pass")
    shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Greedy parity with llama.cpp: run `lcode generate --raw --greedy --json` on each case
of ../shared/reference/greedy-*.json and compare the generated tokens.

A case matches when the tokens equal llama.cpp's up to and including the first step whose
top-2 logprob margin is below 0.1 (a near tie), or all of them where there is none.
Prints one line per model: cases, matches, rate; exits 1 if a rate is under --min-rate.

usage: scripts/parity.py [--lcode PATH] [--min-rate 0.9] MODEL=REFERENCE.json ...
"""
import argparse
import json
import subprocess
import sys

NEAR_TIE = 0.1


def required_prefix(case):
    """How many of llama.cpp's tokens must match."""
    for i, margin in enumerate(case["top2_logprob_margin"]):
        if margin < NEAR_TIE:
            return i + 1
    return len(case["greedy_ids"])


def run_case(lcode, model, case):
    n = len(case["greedy_ids"])
    out = subprocess.run(
        [lcode, "generate", "--model", model, "--raw", "--greedy", "--json", "-n", str(max(n, 16)), "--prompt", "-"],
        input=case["prompt"].encode(),
        capture_output=True,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"lcode failed on a case: {out.stderr.decode().strip()}")
    return json.loads(out.stdout)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lcode", default="target/release/lcode")
    ap.add_argument("--min-rate", type=float, default=0.9)
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("pairs", nargs="+", help="MODEL=REFERENCE.json")
    args = ap.parse_args()
    ok = True
    for pair in args.pairs:
        model, ref = pair.split("=", 1)
        cases = json.load(open(ref))["cases"]
        matched = 0
        for i, case in enumerate(cases):
            result = run_case(args.lcode, model, case)
            k = required_prefix(case)
            good = result["tokens"][:k] == case["greedy_ids"][:k]
            matched += good
            if args.verbose or not good:
                print(f"  case {i} ({case['kind']}): {'ok' if good else 'MISMATCH'} need {k}: "
                      f"llama.cpp {case['greedy_ids'][:k]} lcode {result['tokens'][:k]}", file=sys.stderr)
        rate = matched / len(cases)
        print(f"{model}: {matched}/{len(cases)} cases match ({rate:.0%})")
        ok &= rate >= args.min_rate
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

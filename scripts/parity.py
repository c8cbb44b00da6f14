#!/usr/bin/env python3
"""Greedy parity with llama.cpp: run `lcode generate --raw --greedy --json` on each case
of ../shared/reference/greedy-*.json and compare the generated tokens.

A case matches when the tokens equal llama.cpp's up to and including the first step whose
top-2 logprob margin is below 0.1 (a near tie, "where either token is right"), or all of
them where there is none. At that near-tie step lcode's token may be the other of the two:
it counts when llama.cpp's token is lcode's own runner-up there and lcode's margin is below
0.1 as well (checked with `--top-logprobs 2`). The strict count, which also demands
llama.cpp's token at the near-tie step, is printed beside it.
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


def other_of_the_tie(case, result, k):
    """lcode agrees before the first near tie (step k - 1) and there picks the other of
    the two near-tied tokens: llama.cpp's token is lcode's runner-up, within 0.1."""
    margins = case["top2_logprob_margin"]
    if k > len(margins) or margins[k - 1] >= NEAR_TIE:
        return False
    if result["tokens"][: k - 1] != case["greedy_ids"][: k - 1]:
        return False
    top = result["top_logprobs"][k - 1]
    return (len(top) == 2 and top[1]["id"] == case["greedy_ids"][k - 1]
            and top[0]["logprob"] - top[1]["logprob"] < NEAR_TIE)


def run_case(lcode, model, case):
    n = len(case["greedy_ids"])
    out = subprocess.run(
        [lcode, "generate", "--model", model, "--raw", "--greedy", "--json", "-n", str(max(n, 16)),
         "--top-logprobs", "2", "--prompt", "-"],
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
        matched = strict = 0
        for i, case in enumerate(cases):
            result = run_case(args.lcode, model, case)
            k = required_prefix(case)
            ours, theirs = result["tokens"][:k], case["greedy_ids"][:k]
            exact = ours == theirs
            good = exact or other_of_the_tie(case, result, k)
            matched += good
            strict += exact
            if args.verbose or not exact:
                verdict = "ok" if exact else "near tie, other token" if good else "MISMATCH"
                print(f"  case {i} ({case['kind']}): {verdict}; need {k}: "
                      f"llama.cpp {theirs} lcode {ours}", file=sys.stderr)
        rate = matched / len(cases)
        print(f"{model}: {matched}/{len(cases)} cases match ({rate:.0%}); "
              f"strict, llama.cpp's token at the near tie too: {strict}/{len(cases)}")
        ok &= rate >= args.min_rate
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

"""Compare implementations of one Python function: lcode's cross-check.

usage: python3 cross_check.py FUNCTION FILE...
       python3 cross_check.py --examples FUNCTION FILE

The second form runs the examples of a docstring written as `f(x) == y` (or `=>`, `==>`,
`->`, `➞`) instead of `>>>`, which doctest does not read, and prints {"examples": N,
"failures": "..."}, the failures in doctest's words.

Each FILE is a whole module holding FUNCTION. The inputs are the calls of FUNCTION in the
first file's docstring examples (`>>> FUNCTION(...)` with literal arguments), and for each
of them the same call with one argument changed (a number moved, a string or list cut,
reversed or emptied). Every candidate runs every input (a fresh copy of the arguments,
half a second each); a result is its repr, or the name of the exception it raised.

Prints one JSON object: {"inputs": N, "examples_pass": [bool per file],
"same": [[bool per pair of files]]}, where same[i][j] says whether files i and j gave
the same result for every input, and examples_pass whether a file's docstring examples
pass (doctest).
"""

import ast
import copy
import doctest
import json
import re
import signal
import sys
import types

MAX_INPUTS = 60
# Seconds one call may take, and the timeouts after which a candidate's remaining
# inputs count as timed out without running (a loop that never ends on one input
# rarely ends on its neighbours, and the whole check must stay short).
CALL_SECONDS = 0.5
MAX_TIMEOUTS = 3


def load(path):
    module = types.ModuleType("candidate")
    module.__file__ = path
    with open(path) as f:
        source = f.read()
    module.__lcode_source__ = source
    exec(compile(source, path, "exec"), module.__dict__)
    return module, source


# `f(3, 4) == 6.00`, `f(2) => true`, `f([]) ➞ []`: a call, an arrow, an expected value.
ARROW = re.compile(r"^(?P<call>\w+\(.*\))\s*(?:==>|==|=>|->|➞|→)\s*(?P<want>.+?)\s*$")


def literal(text):
    text = text.strip().rstrip(".,;")
    for word, value in (("true", "True"), ("false", "False"), ("none", "None")):
        if text.lower() == word:
            text = value
    return ast.literal_eval(text)


def arrow_examples(source, name):
    """(args, expected) of each `name(...) == value` line with literal arguments."""
    out = []
    for line in source.splitlines():
        m = ARROW.match(line.strip())
        if not m:
            continue
        try:
            node = ast.parse(m.group("call"), mode="eval").body
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
                continue
            if node.func.id != name or node.keywords:
                continue
            out.append(([ast.literal_eval(a) for a in node.args], literal(m.group("want"))))
        except (SyntaxError, ValueError):
            continue
    return out


def arrow_failures(function, examples):
    failures = []
    for args, want in examples:
        got = result(function, args)
        if got != "=" + repr(want) and not (
            got.startswith("=") and isinstance(want, float) and close(got[1:], want)
        ):
            call = f"{function.__name__}({', '.join(map(repr, args))})"
            failures.append(f"Failed example:\n    {call}\nExpected:\n    {want!r}\nGot:\n    {got[1:]}")
    return failures


def close(got, want):
    try:
        return abs(float(got) - want) <= 1e-6 * max(1.0, abs(want))
    except ValueError:
        return False


def example_calls(source, name):
    calls = [args for args, _ in arrow_examples(source, name)]
    for line in source.splitlines():
        line = line.strip()
        if not line.startswith(">>> "):
            continue
        try:
            node = ast.parse(line[4:], mode="eval").body
        except SyntaxError:
            continue
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
            continue
        if node.func.id != name or node.keywords:
            continue
        try:
            calls.append([ast.literal_eval(a) for a in node.args])
        except ValueError:
            continue
    return calls


def changed(value):
    """Values near `value`: the inputs a wrong implementation most often gets wrong."""
    if isinstance(value, bool):
        return [not value]
    if isinstance(value, int):
        return [value + 1, value - 1, 0, -value, 2 * value + 3]
    if isinstance(value, float):
        return [value + 0.5, -value, 0.0, 2 * value]
    if isinstance(value, str):
        return ["", value[::-1], value[1:], value + value[:1], value.upper()]
    if isinstance(value, list):
        return [[], value[::-1], value[:-1], value + value[:1]]
    if isinstance(value, tuple):
        return [tuple(v) for v in changed(list(value))]
    return []


def inputs(calls):
    seen, out = set(), []
    candidates = list(calls)
    for args in calls:
        for i, value in enumerate(args):
            for v in changed(value):
                candidates.append(args[:i] + [v] + args[i + 1:])
    for args in candidates:
        key = repr(args)
        if key not in seen:
            seen.add(key)
            out.append(args)
    return out[:MAX_INPUTS]


class Timeout(Exception):
    pass


def on_alarm(signum, frame):
    raise Timeout()


def result(function, args):
    signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, CALL_SECONDS)
    try:
        return "=" + repr(function(*copy.deepcopy(args)))
    except Timeout:
        return "!timeout"
    except BaseException as e:  # a candidate's failure is a result like any other
        return "!" + type(e).__name__
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def results_of(function, calls):
    out, timeouts = [], 0
    for args in calls:
        r = "!timeout" if timeouts >= MAX_TIMEOUTS else result(function, args)
        timeouts += r == "!timeout"
        out.append(r)
    return out


def examples_pass(module, name):
    function = getattr(module, name, None)
    if function is None:
        return False
    arrows = arrow_examples(inspect_source(module), name)
    if arrows and arrow_failures(function, arrows):
        return False
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    signal.signal(signal.SIGALRM, on_alarm)
    try:
        for test in doctest.DocTestFinder().find(function, name, globs=dict(module.__dict__)):
            # An example that never ends fails (the timeout is raised inside it).
            signal.setitimer(signal.ITIMER_REAL, 2 * CALL_SECONDS * max(1, len(test.examples)))
            runner.run(test, out=lambda s: None)
            signal.setitimer(signal.ITIMER_REAL, 0)
    except Timeout:
        return False
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    return runner.failures == 0


def inspect_source(module):
    return getattr(module, "__lcode_source__", "")


def examples_main(name, path):
    module, source = load(path)
    function = getattr(module, name, None)
    examples = arrow_examples(source, name)
    if function is None or not examples:
        print(json.dumps({"examples": 0, "failures": ""}))
        return
    failures = arrow_failures(function, examples)
    print(json.dumps({"examples": len(examples), "failures": "\n".join(failures)}))


def main():
    if sys.argv[1] == "--examples":
        return examples_main(sys.argv[2], sys.argv[3])
    name, files = sys.argv[1], sys.argv[2:]
    modules = []
    for path in files:
        try:
            modules.append(load(path))
        except BaseException:
            modules.append((None, ""))
    calls = inputs(example_calls(modules[0][1], name))
    results = []
    for module, _ in modules:
        function = getattr(module, name, None) if module else None
        if function is None:
            results.append(None)
        else:
            results.append(results_of(function, calls))
    same = [[a is not None and a == b for b in results] for a in results]
    passes = [m is not None and examples_pass(m, name) for m, _ in modules]
    print(json.dumps({"inputs": len(calls), "examples_pass": passes, "same": same}))


if __name__ == "__main__":
    main()

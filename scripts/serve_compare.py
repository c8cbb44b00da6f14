#!/usr/bin/env python3
"""Side by side, one run: `lcode serve` and llama.cpp's llama-server on the same GGUF file
and thread count.

- Time to first token for a prompt of about 2,000 tokens sent twice to a fresh server:
  cold (nothing cached) and warm (the prefix cache holds it), measured by the client
  from the request to the first streamed text.
- Decode speed of a 256-token reply (ignore_eos) through each server, and through
  in-process `lcode generate`, to show what the HTTP layer costs.

Servers run one at a time (never two at once on the same cores), alternating for
`--rounds` rounds; every figure is printed per round, then the medians.

usage: scripts/serve_compare.py [--tier fast] [--threads 2] [--rounds 3]
(llama-server is built by scripts/llama_cpp_build.sh on first use)
"""

import argparse
import http.client
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LCODE = ROOT / "target" / "release" / "lcode"
CTX = 4096


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def model_path(tier):
    out = subprocess.run([LCODE, "models", "--json"], capture_output=True, text=True, check=True)
    for line in out.stdout.splitlines():
        row = json.loads(line)
        if row.get("tier") == tier:
            if not row.get("installed", True) or not Path(row["path"]).exists():
                subprocess.run([LCODE, "models", "pull", tier], check=True)
            return row["path"]
    sys.exit(f"no tier {tier}")


def long_prompt():
    """About 2,000 tokens of real code and a question about it."""
    code = ""
    for f in sorted((ROOT / "src" / "engine").glob("*.rs")):
        code += f"// {f.name}\n" + f.read_text()
        if len(code) > 7600:
            break
    return [
        {"role": "system", "content": "You are a careful code reviewer. Answer briefly."},
        {"role": "user", "content": code[:7600] + "\n\nWhat does this code do? One sentence."},
    ]


def wait_ready(port, proc, seconds=120):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"server exited with {proc.returncode}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/health")
            r = c.getresponse()
            r.read()
            if r.status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    sys.exit("server did not become ready")


def stream_chat(port, body):
    """(seconds to the first text, the final timings or usage) of one streamed chat."""
    body = dict(body, stream=True, stream_options={"include_usage": True})
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    start = time.perf_counter()
    c.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
    r = c.getresponse()
    if r.status != 200:
        sys.exit(f"HTTP {r.status}: {r.read()[:300]}")
    first = None
    last = {}
    for raw in r:
        line = raw.decode().strip()
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            break
        chunk = json.loads(data)
        choices = chunk.get("choices") or []
        if first is None and choices and (choices[0].get("delta") or {}).get("content"):
            first = time.perf_counter() - start
        for key in ("usage", "timings"):
            if chunk.get(key):
                last[key] = chunk[key]
    return first, last


def whole_chat(port, body):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    c.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
    r = c.getresponse()
    data = json.loads(r.read())
    if r.status != 200:
        sys.exit(f"HTTP {r.status}: {data}")
    return data


def free_port():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def measure(name, cmd, port, messages, decode_prompt):
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(port, proc)
        body = {"model": "m", "messages": messages, "max_tokens": 8, "temperature": 0}
        cold, info = stream_chat(port, body)
        warm, info2 = stream_chat(port, body)
        usage = info2.get("usage", {})
        decode = whole_chat(
            port,
            {"model": "m", "messages": decode_prompt, "max_tokens": 256, "temperature": 0,
             "ignore_eos": True},
        )
        tps = decode.get("timings", {}).get("predicted_per_second", 0.0)
        n = decode.get("usage", {}).get("completion_tokens", 0)
        prompt_tokens = info.get("usage", {}).get("prompt_tokens", 0)
        cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
        print(f"  {name:13} prompt {prompt_tokens} tokens: ttft cold {cold*1000:7.0f} ms, "
              f"warm {warm*1000:6.0f} ms (cached_tokens {cached}); "
              f"decode {tps:5.1f} tok/s over {n} tokens", flush=True)
        return cold, warm, tps
    finally:
        proc.terminate()
        proc.wait()


def generate_decode(model, threads, decode_prompt):
    out = subprocess.run(
        [LCODE, "generate", "--model", model, "--threads", str(threads), "--ctx", str(CTX),
         "--greedy", "-n", "256", "--ignore-eos", "--json", "-p", decode_prompt[-1]["content"]],
        capture_output=True, text=True, check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    stats = result["stats"]
    print(f"  {'lcode generate':13} decode {stats['decode_tps']:5.1f} tok/s over "
          f"{len(result['tokens'])} tokens (in-process)", flush=True)
    return stats["decode_tps"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tier", default="fast")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    if not LCODE.exists():
        subprocess.run(["cargo", "build", "--release", "--locked"], cwd=ROOT, check=True)
    model = model_path(args.tier)
    server = subprocess.run([ROOT / "scripts" / "llama_cpp_build.sh", "llama-server"],
                            capture_output=True, text=True, check=True).stdout.strip()
    messages = long_prompt()
    decode_prompt = [{"role": "user", "content": "Write a long Python module of small utility functions with docstrings."}]
    amx = os.environ.get("LCODE_AMX", "auto")
    print(f"== {time.strftime('%Y-%m-%dT%H:%MZ', time.gmtime())} {args.tier} ({model}), "
          f"{args.threads} threads, {cpu_name()}, LCODE_AMX={amx}")
    rows = {"lcode serve": [], "llama-server": [], "generate": []}
    for r in range(args.rounds):
        print(f"-- round {r + 1}")
        port = free_port()
        rows["lcode serve"].append(measure(
            "lcode serve",
            [LCODE, "serve", "--model", model, "--threads", str(args.threads), "--ctx", str(CTX),
             "--port", str(port)],
            port, messages, decode_prompt))
        port = free_port()
        rows["llama-server"].append(measure(
            "llama-server",
            [server, "-m", model, "-t", str(args.threads), "-tb", str(args.threads), "-c", str(CTX),
             "-np", "1", "--port", str(port), "--host", "127.0.0.1", "--no-webui"],
            port, messages, decode_prompt))
        rows["generate"].append(generate_decode(model, args.threads, decode_prompt))
    med = lambda xs: statistics.median(xs)
    ls, ll = rows["lcode serve"], rows["llama-server"]
    cold_l, warm_l, dec_l = (med([x[i] for x in ls]) for i in range(3))
    cold_s, warm_s, dec_s = (med([x[i] for x in ll]) for i in range(3))
    dec_g = med(rows["generate"])
    print("== medians")
    print(f"ttft cold: lcode {cold_l*1000:.0f} ms, llama-server {cold_s*1000:.0f} ms -> "
          f"lcode/llama-server {cold_l/cold_s:.2f}x")
    print(f"ttft warm: lcode {warm_l*1000:.0f} ms, llama-server {warm_s*1000:.0f} ms -> "
          f"lcode/llama-server {warm_l/warm_s:.2f}x")
    print(f"decode: lcode serve {dec_l:.1f}, lcode generate {dec_g:.1f} tok/s -> serve/generate "
          f"{dec_l/dec_g:.3f}; llama-server {dec_s:.1f} tok/s")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Draws target/bench/results.json (written by `make bench`) into
docs/bench.png: CPU added over bare Envoy per configuration, and p50/p99
latency at the fixed rate."""
import json
import os

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
data = json.load(open(os.path.join(ROOT, "target", "bench", "results.json")))
rows = data["results"]
names = [r["configuration"] for r in rows]
added = [r["added_us"] for r in rows]
noop = next(r["added_us"] for r in rows if r["configuration"] == "no-op wasm")

fig, (a, b) = plt.subplots(1, 2, figsize=(15, 6))
colors = ["#888" if n in ("bare Envoy", "native filters", "no-op wasm") else "#3b7dd8" for n in names]
a.barh(names[::-1], added[::-1], color=colors[::-1])
a.axvline(noop, color="#d62728", linestyle="--", label="no-op wasm filter")
a.axvline(1.15 * noop, color="#ff7f0e", linestyle=":", label="target: 1.15 x no-op")
a.set_xlabel("Envoy CPU added over bare Envoy (µs per request, median)")
a.set_title("CPU per request (--concurrency 1, direct response)")
a.legend()
y = range(len(names))
b.barh([n for n in names][::-1], [r["p99_us"] for r in rows][::-1], color="#bbb", label="p99")
b.barh([n for n in names][::-1], [r["p50_us"] for r in rows][::-1], color="#3b7dd8", label="p50")
b.set_xlabel("latency at %d req/s (µs)" % data["fixed_rate_rps"])
b.set_title("Latency at a fixed rate")
b.legend()
fig.suptitle("make bench: %d rounds x %d requests, medians (Envoy 1.40.0, 2-core shared machine)"
             % (data["rounds"], data["requests_per_round"]))
fig.tight_layout()
out = os.path.join(ROOT, "docs", "bench.png")
fig.savefig(out, dpi=80)
print("wrote", out)

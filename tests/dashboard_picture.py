#!/usr/bin/env python3
"""Feeds the running demo (`make run`: Envoy on 127.0.0.1:10000, admin :9901)
with mixed per-tenant traffic for a bounded time, scrapes /stats/prometheus
every few seconds, and draws the panels of istio/grafana-dashboard.json from
those real samples into docs/dashboard.png (plus the raw scrapes in
target/dashboard-scrapes.json).

Run through `make dashboard-picture` (starts and stops the demo).
"""

import http.client
import json
import os
import random
import re
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DURATION_S = float(os.environ.get("DURATION_S", "90"))
SCRAPE_EVERY_S = 3.0
WINDOW_S = 15.0
TOKENS = json.load(open(os.path.join(ROOT, "examples", "tokens.json")))

SAMPLE = re.compile(r'^(meshware_[a-z_]+)\{([^}]*)\} ([0-9.e+-]+)$')


def scrape():
    c = http.client.HTTPConnection("127.0.0.1", 9901, timeout=5)
    c.request("GET", "/stats/prometheus")
    text = c.getresponse().read().decode()
    out = []
    for line in text.splitlines():
        m = SAMPLE.match(line)
        if m:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
            out.append((m.group(1), labels, float(m.group(3))))
    return out


def client(stop, plan):
    """One keep-alive client sending requests from `plan` (host, path, headers)."""
    conn = http.client.HTTPConnection("127.0.0.1", 10000, timeout=5)
    while not stop.is_set():
        host, method, path, headers, pause = plan()
        try:
            conn.request(method, path, headers=dict(headers, host=host))
            conn.getresponse().read()
        except (OSError, http.client.HTTPException):
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", 10000, timeout=5)
        time.sleep(pause)


def acme():
    r = random.random()
    if r < 0.05:
        return ("shop.acme.example", "GET", "/orders", {"x-echo-status": "503"}, 0.05)
    return ("shop.acme.example", "GET", "/orders?page=%d" % random.randint(1, 9),
            {"x-echo-delay-ms": str(random.choice([1, 2, 5, 10, 20]))}, 0.05)


def acme_burst():
    # One client over its per-client limit (5/s, burst 10): 429s.
    return ("shop.acme.example", "GET", "/cart", {}, 0.08)


def umbrella():
    if random.random() < 0.3:
        return ("api.umbrella.example", "GET", "/orders", {}, 0.1)
    token = random.choice(["valid RS256", "valid ES256", "expired"])
    return ("api.umbrella.example", "GET", "/orders",
            {"authorization": "Bearer " + TOKENS[token]}, 0.1)


def globex():
    return ("api.globex.example", "GET", "/",
            {"x-echo-delay-ms": str(int(random.expovariate(1 / 30.0)))}, 0.1)


def public():
    return ("www.unknown.example", "GET", "/page/%d" % random.randint(1, 10**6), {}, 0.2)


def rates(scrapes, t_index, name, by, where=lambda l: True):
    """Per-second rate over WINDOW_S ending at scrape t_index, summed by label `by`."""
    t1, s1 = scrapes[t_index]
    j = t_index
    while j > 0 and t1 - scrapes[j][0] < WINDOW_S:
        j -= 1
    t0, s0 = scrapes[j]
    if t1 <= t0:
        return {}
    def total(samples):
        acc = {}
        for n, labels, v in samples:
            if n == name and where(labels):
                key = by(labels)
                acc[key] = acc.get(key, 0.0) + v
        return acc
    a, b = total(s0), total(s1)
    return {k: (b[k] - a.get(k, 0.0)) / (t1 - t0) for k in b}


def quantile(buckets, q):
    """Prometheus histogram_quantile over {le: rate} (le as float, +Inf last)."""
    items = sorted(buckets.items())
    total = items[-1][1] if items else 0
    if total <= 0:
        return None
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for le, count in items:
        if count >= rank:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * (rank - prev_count) / max(count - prev_count, 1e-9)
        prev_le, prev_count = le, count
    return prev_le


def main():
    try:
        scrape()
    except OSError:
        sys.exit("the demo is not running on 127.0.0.1:9901 (make run)")
    stop = threading.Event()
    plans = [acme, acme, acme_burst, umbrella, umbrella, globex, globex, public]
    threads = [threading.Thread(target=client, args=(stop, p), daemon=True) for p in plans]
    for t in threads:
        t.start()
    scrapes = []
    start = time.time()
    while time.time() - start < DURATION_S:
        scrapes.append((time.time() - start, scrape()))
        time.sleep(SCRAPE_EVERY_S)
    stop.set()
    for t in threads:
        t.join(timeout=10)
    os.makedirs(os.path.join(ROOT, "target"), exist_ok=True)
    with open(os.path.join(ROOT, "target", "dashboard-scrapes.json"), "w") as f:
        json.dump(scrapes, f)
    draw(scrapes)


def draw(scrapes):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tenants = ["acme", "globex", "umbrella", "public"]
    idx = range(1, len(scrapes))
    ts = [scrapes[i][0] for i in idx]
    fig, axes = plt.subplots(3, 2, figsize=(14, 11))
    fig.suptitle("meshware dashboard panels from a real `make run` session "
                 "(Envoy 1.40, /stats/prometheus every %ds, %ds windows)" % (SCRAPE_EVERY_S, WINDOW_S))

    ax = axes[0][0]
    for t in tenants:
        ax.plot(ts, [rates(scrapes, i, "meshware_requests", lambda l: l["tenant"]).get(t, 0) for i in idx], label=t)
    ax.set_title("Requests per second by tenant")
    ax.set_ylabel("req/s")
    ax.legend()

    ax = axes[0][1]
    for t in tenants:
        ratios = []
        for i in idx:
            by_class = rates(scrapes, i, "meshware_requests", lambda l: (l["tenant"], l["status_class"]))
            all_ = sum(v for (tt, _), v in by_class.items() if tt == t)
            err = by_class.get((t, "5xx"), 0) + by_class.get((t, "4xx"), 0)
            ratios.append(100 * err / all_ if all_ else 0)
        ax.plot(ts, ratios, label=t)
    ax.set_title("Error ratio (4xx + 5xx) by tenant")
    ax.set_ylabel("%")
    ax.legend()

    ax = axes[1][0]
    for t in ["acme", "globex"]:
        for q, style in [(0.5, "-"), (0.99, "--")]:
            series = []
            for i in idx:
                b = rates(scrapes, i, "meshware_request_duration_ms_bucket",
                          lambda l: float(l["le"].replace("+Inf", "inf")),
                          lambda l, t=t: l["tenant"] == t)
                series.append(quantile(b, q))
            ax.plot(ts, series, style, label="%s p%d" % (t, q * 100))
    ax.set_title("Latency p50 / p99 (histogram_quantile)")
    ax.set_ylabel("ms")
    ax.set_yscale("log")
    ax.legend()

    ax = axes[1][1]
    for (filt, outcome) in [("rate_limit", "limited"), ("jwt_auth", "denied_missing"),
                            ("jwt_auth", "cache_hit"), ("jwt_auth", "allowed")]:
        ax.plot(ts, [sum(rates(scrapes, i, "meshware_decisions", lambda l: l["outcome"],
                                lambda l, f=filt: l["filter"] == f).get(outcome, 0) for _ in [0]) for i in idx],
                label="%s %s" % (filt, outcome))
    ax.set_title("Filter outcomes per second")
    ax.set_ylabel("ops/s")
    ax.legend()

    ax = axes[2][0]
    last = len(scrapes) - 1
    by = rates(scrapes, last, "meshware_requests", lambda l: (l["tenant"], l["status_class"]))
    classes = ["2xx", "4xx", "5xx"]
    bottom = [0.0] * len(tenants)
    for c in classes:
        vals = [by.get((t, c), 0) for t in tenants]
        ax.bar(tenants, vals, bottom=bottom, label=c)
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_title("Requests by status class, last window")
    ax.set_ylabel("req/s")
    ax.legend()

    ax = axes[2][1]
    outcomes = rates(scrapes, last, "meshware_decisions", lambda l: (l["filter"], l["outcome"]),
                     lambda l: l["tenant"] in tenants)
    top = sorted(((v, "%s %s" % k) for k, v in outcomes.items() if v > 0), reverse=True)[:12]
    ax.barh([n for _, n in top][::-1], [v for v, _ in top][::-1])
    ax.set_title("Top filter outcomes, last window")
    ax.set_xlabel("ops/s")

    for row in axes[:2]:
        for a in row:
            a.set_xlabel("seconds")
            a.grid(alpha=0.3)
    fig.tight_layout()
    out = os.path.join(ROOT, "docs", "dashboard.png")
    fig.savefig(out, dpi=80)
    print("wrote", out)


if __name__ == "__main__":
    main()

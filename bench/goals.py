#!/usr/bin/env python3
"""Writes the goals table of BENCHMARKS.md (issue 22's P-rows) from the results of one run.

    python3 bench/goals.py bench/results > bench/results/goals.md

Each row: the figure of this run, the goal, and "met" / "missed" / "not measured". Nothing here
fails on a number.
"""
import json
import os
import sys


def load(results, name):
    path = os.path.join(results, name)
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def verdict(ok):
    return "**met**" if ok else "**missed**"


def both_verdict(wasm_ok, rhai_ok):
    """One goal over two runtimes: met only when both meet it, and which one missed said."""
    if wasm_ok and rhai_ok:
        return verdict(True)
    if wasm_ok or rhai_ok:
        return f"**missed** ({'Rhai' if wasm_ok else 'wasm'}; {'wasm' if wasm_ok else 'Rhai'} met)"
    return verdict(False)


def main():
    results = sys.argv[1] if len(sys.argv) > 1 else "bench/results"
    harness = load(results, "harness.json") or {}
    transports = load(results, "transports.json") or {}
    rows = []

    overhead = harness.get("overhead")
    if overhead:
        ratio = overhead["ratio_plugin_over_plain"]
        rows.append(("P1", "plugin, 1,000 sequential `Get-Mailbox -ResultSize 10` vs a plain reqwest client (§1)",
                     f"{ratio:.3f}×", "≤ 1.05×", verdict(ratio <= 1.05)))
    cold = harness.get("cold")
    if cold:
        ratio = cold["ratio_python_over_warden"]
        rows.append(("P2", "cold `warden run` of a one-call guest vs Python msal + requests (§2)",
                     f"{ratio:.1f}× faster ({cold['warden_ms']['median']:.1f} vs {cold['python_ms']['median']:.0f} ms)",
                     "≥ 15× faster", verdict(ratio >= 15)))
    start = harness.get("start")
    if start:
        ratio = start["ratio"]
        rows.append(("P3", "per-run start of a trivial plugin vs bare wasmtime (§3)",
                     f"{ratio:.2f}× ({start['warden_us']['median']:.1f} vs {start['bare_us']['median']:.1f} µs)",
                     "≤ 1.15×", verdict(ratio <= 1.15)))
    refused = harness.get("refused_call")
    if refused:
        wasm = refused["wasm_us"]["median"]
        rhai = refused["rhai_us"]["median"]
        rows.append(("P4", "a call the policy refuses, with its audit line, wasm / Rhai (§4)",
                     f"{wasm:.2f} / {rhai:.2f} µs", "≤ 1 µs", both_verdict(wasm <= 1.0, rhai <= 1.0)))
    scale = harness.get("scale")
    one = next((row for row in (scale or {}).get("rows", []) if row["plugins"] == 1), None)
    if one:
        rate = one["objects_per_s"]["median"]
        rss = one["peak_rss_mib"]["median"]
        rows.append(("P6", "streaming 100,000 mailboxes through one plugin (§6)",
                     f"{rate:,.0f} objects/s, {rss:.0f} MiB", "≥ 30k objects/s, ≤ 64 MiB",
                     verdict(rate >= 30000 and rss <= 64)))
    else:
        rows.append(("P6", "streaming 100,000 mailboxes through one plugin (§6)", "—",
                     "≥ 30k objects/s, ≤ 64 MiB", "not measured (a `--quick` run skips the scale run)"))
    if transports.get("rest_us_per_call") and transports.get("rps_us_per_call"):
        ratio = transports["rps_us_per_call"]["median"] / transports["rest_us_per_call"]["median"]
        rows.append(("P9", "Remote PowerShell vs REST per small call (§8)", f"{ratio:.2f}×", "≤ 1.8×",
                     verdict(ratio <= 1.8)))

    print("| id | what | this run | goal | |")
    print("|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()

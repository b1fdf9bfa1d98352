"""Render a results JSON of ``bench/run.py`` as markdown tables: ``python bench/to_markdown.py FILE.json``."""

from __future__ import annotations

import json
import sys


def render(path: str) -> str:
    data = json.loads(open(path).read())
    meta, results = data["meta"], data["results"]
    lines = [f"threads={meta['threads']}, malloc={meta.get('malloc', 'default')}, torch {meta['torch']}, {meta['cpu_count']} CPUs, "
             f"load average at start {tuple(round(x, 1) for x in meta['load_avg_start'])}, "
             f"at end {tuple(round(x, 1) for x in meta['load_avg_end'])}; run took {meta['wall_s']} s", ""]
    groups: dict[tuple, list] = {}
    for r in results:
        groups.setdefault((r["workload"], tuple(r["shape"]), r["device"]), []).append(r)
    for (wl, shape, device), rows in groups.items():
        ok = [r for r in rows if r.get("status") == "ok"]
        ref = next((r for r in ok if r["variant"] == "spikegrad/torch"), None)
        peers = [r for r in ok if not r["variant"].startswith("spikegrad") and "LIFNode" not in r["variant"]]
        best = min(peers, key=lambda r: r["median_ms"]) if peers else None
        lines += [f"**{wl}**, (T, B, N) = {shape}, {device}", "",
                  "| variant | median ms | × plain loop | × best peer | spike rate | saved B / neuron-step | samples/s | note |",
                  "|---|---:|---:|---:|---:|---:|---:|---|"]
        for r in rows:
            if r.get("status") != "ok":
                lines.append(f"| {r['variant']} | {r.get('status')} | | | | | | |")
                continue
            sb = r.get("saved_bytes_per_neuron_step")
            sps = r.get("samples_per_s")
            lines.append(
                f"| {r['variant']} | {r['median_ms']:.1f} | {ref['median_ms'] / r['median_ms']:.2f} | "
                f"{best['median_ms'] / r['median_ms']:.2f} | {r['spike_rate']:.4f} | "
                f"{'-' if sb is None else f'{sb:.2f}'} | {'-' if sps is None else f'{sps:.0f}'} | {r.get('note', '')} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    for p in sys.argv[1:]:
        print(render(p))

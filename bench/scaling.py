"""The scaling table: how Weir and its peers grow from S to M to L (time and peak RSS vs
rows), and Weir at 1 vs 2 workers, from the results bench/peers.py wrote.

    python bench/scaling.py        (reads results/peers-{S,M,L}.json, writes results/scaling.md)

Every peer (not the floor) is shown at every size it was run, failures included; the best
peer named in the heading is the fastest one at the largest size where every peer run
there finished.
"""

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
WEIR = ["weir1", "weir2", "weir2p"]


def load() -> dict:
    reports = {}
    for size in ("S", "M", "L"):
        path = RESULTS / f"peers-{size}.json"
        if path.exists():
            reports[size] = json.loads(path.read_text())
    return reports


def by_key(report: dict) -> dict:
    return {r["key"]: r for r in report["results"]}


def cell(result: dict | None) -> tuple[str, str, str]:
    if result is None:
        return ("not run", "", "")
    if "failed" in result:
        # The largest process seen before the failure (a run killed for memory shows its peak).
        peak = max(run["peak_rss_mib"] for run in result["runs"])
        return (f"failed ({result['failed'].split(':')[-1].strip()})", "", f"{peak:,.0f} before it failed")
    rss = "n/a" if result["peak_rss_mib"] is None else f"{result['peak_rss_mib']:,.0f}"
    return (f"{result['wall_s']:.2f}", f"{result['rows_per_s']:,.0f}", rss)


def main():
    reports = load()
    not_peers = WEIR + ["floor", "weirbase"]
    peer_keys = []
    for report in reports.values():
        peer_keys += [r["key"] for r in report["results"] if r["key"] not in not_peers + peer_keys]
    # The largest size where every system ran to the end and some peer ran at all.
    finished = [
        size
        for size, report in reports.items()
        if all("wall_s" in r for r in report["results"]) and any(r["key"] not in not_peers for r in report["results"])
    ]
    largest = finished[-1] if finished else list(reports)[0]
    peers = [r for r in reports[largest]["results"] if "wall_s" in r and r["key"] not in not_peers]
    best = min(peers, key=lambda r: r["wall_s"])["key"] if peers else None
    shown = WEIR + ["floor"] + sorted(peer_keys, key=lambda key: key != best)
    any_report = next(iter(reports.values()))
    machine = any_report["machine"]
    lines = [
        f"Scaling, {machine['cores']} cores, {machine['ram_gib']} GiB; medians of interleaved runs "
        f"(dates: {', '.join(sorted({r['date'] for r in reports.values()}))}); best peer at {largest}: "
        f"{by_key(reports[largest])[best]['system'] if best else 'none run'}",
        "",
        "| system | rows | wall s | rows/s | peak RSS MiB | wall / wall at S | runs |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key in shown:
        base = by_key(reports["S"]).get(key) if "S" in reports else None
        for size, report in reports.items():
            result = by_key(report).get(key)
            if result is None:
                continue
            wall, rate, rss = cell(result)
            growth = f"{result['wall_s'] / base['wall_s']:.1f}" if base and "wall_s" in base and "wall_s" in result else ""
            lines.append(f"| {result['system']} | {report['rows']:,} | {wall} | {rate} | {rss} | {growth} | {result.get('reps', '')} |")
    lines += [
        "",
        "Weir's parallelism: wall time of 1 worker divided by that of 2 workers in one process",
        "and of 2 processes × 1 worker (2 would be perfect on these 2 cores).",
        "",
        "| rows | 1 worker s | 2 workers s | speedup | 2 processes × 1 worker s | speedup |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for report in reports.values():
        results = by_key(report)
        if not all("wall_s" in results.get(k, {}) for k in WEIR):
            continue
        one, two, procs = (results[k]["wall_s"] for k in WEIR)
        lines.append(f"| {report['rows']:,} | {one:.2f} | {two:.2f} | {one / two:.2f} | {procs:.2f} | {one / procs:.2f} |")
    (RESULTS / "scaling.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

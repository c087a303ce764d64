"""Draws bench/results/peers-SIZE.png from peers-SIZE.json: wall seconds per system.

    bench/.venv-peers/bin/python bench/peers_chart.py [SIZE]
"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

size = sys.argv[1] if len(sys.argv) > 1 else "S"
results = Path(__file__).resolve().parent / "results"
report = json.loads((results / f"peers-{size}.json").read_text())
# Systems that failed (say, out of memory) have no time to draw; the title names them.
finished = [r for r in report["results"] if "wall_s" in r]
failed = [r["system"] for r in report["results"] if "wall_s" not in r]
systems = [r["system"] for r in finished]
walls = [r["wall_s"] for r in finished]
colors = ["#1f6feb" if s.startswith("weir") else "#8b949e" for s in systems]

figure, axis = plt.subplots(figsize=(8, 3.6))
bars = axis.barh(systems[::-1], walls[::-1], color=colors[::-1])
axis.bar_label(bars, labels=[f"{w:.2f} s" for w in walls[::-1]], padding=3, fontsize=8)
axis.set_xscale("log")
axis.set_xlabel("wall seconds (median, log scale)")
machine = report["machine"]
axis.set_title(
    f"impute → standardize → PCA → score, {report['rows']:,} rows\n"
    f"{machine['cores']} cores, {machine['ram_gib']} GiB, {report['date']}"
    + (f"; failed: {', '.join(failed)}" if failed else ""),
    fontsize=9,
)
figure.tight_layout()
figure.savefig(results / f"peers-{size}.png", dpi=120)
print(results / f"peers-{size}.png")

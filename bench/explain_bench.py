"""Explained rows per second: Weir's `explain` step against Python's `shap` on the peers
workload's model (the 8 -> 64 -> 1 MLP over `pca`'s 8 components) and data, with the same
rows and the same background.

    python bench/explain_bench.py [--weir target/release/weir] [--size M] [--fraction 0.0002]
        [--background 100] [--shap-rows 100] [--workers 2]

Weir runs the peers job (impute -> standardize -> PCA 8) with `explain` in place of
`score`, once per method (`exact`: 2^8 = 256 coalitions a row; `permutation` with
`max_evals = 512`: 36 antithetic pairs, 504 coalitions a row), explaining `--fraction` of
the rows. Its rate is the explained rows over the worker seconds of the `explain` stage
(`weir run --json`), times the workers: the rate of the whole machine. Then a gradient
boosting regressor (100 trees, depth 4) and a linear regression fitted to the MLP's scores
of the explained rows are explained the same way by the `tree` and `linear` methods, next to
`shap.TreeExplainer` (interventional) and `shap.LinearExplainer`. `shap` then explains
`--shap-rows` of the same rows (their `pc_*` values read back from Weir's output) against the
background Weir fitted (read from `fitted.json`): `shap.explainers.Exact` and
`shap.explainers.Permutation` (same `max_evals`) over `shap.maskers.Independent`, the model
called through onnxruntime with one thread, batches as large as `shap` makes them. The
exact attributions of both are compared. Writes `results/explain-SIZE.json`.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))

from peers import SIZES, mlp, weir_job  # noqa: E402

MAX_EVALS = 512


def job(data: Path, model: Path, out: Path, method: str, background: int, fraction: float) -> str:
    """The peers job with `explain` in place of `score`, keeping only the explained rows."""
    pipeline = weir_job(data, model, out).split('[[step]]\nop = "score"')[0]
    return pipeline + f"""[[step]]
op = "explain"
model = "{model}"
features = ["pc_*"]
method = "{method}"
max_evals = {MAX_EVALS}
background = {background}
fraction = {fraction}
[[step]]
op = "filter"
expr = "shap_base is not null"
[[step]]
op = "select"
columns = ["id", "pc_*", "shap_*"]
[sink]
uri = "{out}"
mode = "overwrite"
"""


def weir_rate(weir: str, path: Path, out: Path, workers: int) -> dict:
    started = time.perf_counter()
    proc = subprocess.run(
        [weir, "run", str(path), "--workers", str(workers), "--json"], capture_output=True, text=True, cwd=REPO
    )
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(proc.stderr[-2000:])
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    stages = summary.get("stages") or json.loads((out / "_weir" / "manifest.json").read_text())["stages"]
    seconds = sum(s["worker_seconds"] for s in stages if "explain: apply" in s["stage"])
    rows = sum(pq.ParquetFile(p).metadata.num_rows for p in out.glob("*.parquet"))
    return {"explained_rows": rows, "explain_worker_seconds": seconds, "wall_s": wall,
            "rows_per_s": rows / seconds * workers if seconds else float("nan")}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weir", default=str(REPO / "target" / "release" / "weir"))
    parser.add_argument("--size", default="M", choices=sorted(SIZES))
    parser.add_argument("--fraction", type=float, default=0.0002)
    parser.add_argument("--background", type=int, default=100)
    parser.add_argument("--shap-rows", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    import onnxruntime as ort
    import shap

    work = BENCH / "data" / f"peers-{args.size}"
    data = work / "data"
    if not data.exists():
        subprocess.run([sys.executable, str(BENCH / "gen_data.py"), str(SIZES[args.size]), str(data)], check=True)
    model = work / "mlp.onnx"
    if not model.exists():
        mlp(model)

    results = {"size": args.size, "fraction": args.fraction, "background": args.background,
               "max_evals": MAX_EVALS, "workers": args.workers, "weir": {}, "shap": {}}
    outputs = {}
    for method in ("exact", "permutation"):
        out = work / f"out-explain-{method}"
        path = work / f"explain-{method}.toml"
        path.write_text(job(data, model, out, method, args.background, args.fraction))
        results["weir"][method] = weir_rate(args.weir, path, out, args.workers)
        # Exact: every coalition. Permutation: max_evals // (2 (F - 1)) antithetic pairs, each
        # order costing its F - 1 interior coalitions (the empty and full ones once a row).
        coalitions = 2**8 if method == "exact" else 2 * (MAX_EVALS // 14) * 7 + 2
        results["weir"][method]["coalitions_per_row"] = coalitions
        results["weir"][method]["model_rows_per_row"] = coalitions * args.background
        outputs[method] = out
        print(f"weir {method}: {results['weir'][method]}", flush=True)

    fitted = json.loads((outputs["exact"] / "_weir" / "fitted.json").read_text())
    background = np.array(next(s for s in fitted["steps"] if s["op"] == "explain")["params"]["background"])
    table = pq.read_table(outputs["exact"]).sort_by("id").slice(0, args.shap_rows)
    features = [f"pc_{i}" for i in range(8)]
    x = np.column_stack([table.column(f).to_numpy() for f in features])
    weir_exact = np.column_stack([table.column(f"shap_{f}").to_numpy() for f in features])

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])

    def f(z):
        return session.run(None, {"x": np.asarray(z, dtype=np.float32)})[0][:, 0].astype(np.float64)

    masker = shap.maskers.Independent(background, max_samples=len(background))
    for name, explainer, kwargs in [
        ("exact", shap.explainers.Exact(f, masker), {}),
        ("permutation", shap.explainers.Permutation(f, masker, seed=0), {"max_evals": MAX_EVALS}),
    ]:
        started = time.perf_counter()
        explanation = explainer(x, **kwargs)
        seconds = time.perf_counter() - started
        results["shap"][name] = {"rows": len(x), "seconds": seconds, "rows_per_s": len(x) / seconds}
        if name == "exact":
            results["shap"][name]["max_abs_difference_to_weir"] = float(np.max(np.abs(explanation.values - weir_exact)))
        print(f"shap {name}: {results['shap'][name]}", flush=True)

    # Models read from the graph: a gradient boosting regressor (100 trees of depth 4) and a
    # linear regression, both fitted with scikit-learn to the MLP's scores of the explained
    # rows, explained by Weir's tree and linear methods and shap's TreeExplainer
    # (interventional) and LinearExplainer, with the same background.
    from skl2onnx import to_onnx
    from sklearn.ensemble import GradientBoostingRegressor
    from sklearn.linear_model import LinearRegression

    every = pq.read_table(outputs["exact"])
    x_fit = np.column_stack([every.column(f).to_numpy() for f in features])
    y_fit = f(x_fit)
    for method, estimator, make_explainer in [
        ("tree", GradientBoostingRegressor(n_estimators=100, max_depth=4, random_state=0),
         lambda m: shap.TreeExplainer(m, data=background, feature_perturbation="interventional")),
        ("linear", LinearRegression(), lambda m: shap.LinearExplainer(m, masker)),
    ]:
        fitted_model = estimator.fit(x_fit.astype(np.float32), y_fit)
        path = work / f"explain-{method}.onnx"
        path.write_bytes(to_onnx(fitted_model, x_fit[:1].astype(np.float32)).SerializeToString())
        out = work / f"out-explain-{method}"
        job_path = work / f"explain-{method}.toml"
        job_path.write_text(job(data, path, out, method, args.background, args.fraction))
        results["weir"][method] = weir_rate(args.weir, job_path, out, args.workers)
        print(f"weir {method}: {results['weir'][method]}", flush=True)
        rows = pq.read_table(out).sort_by("id").slice(0, args.shap_rows)
        x_rows = np.column_stack([rows.column(f).to_numpy() for f in features])
        weir_values = np.column_stack([rows.column(f"shap_{f}").to_numpy() for f in features])
        explainer = make_explainer(fitted_model)
        started = time.perf_counter()
        values = explainer.shap_values(x_rows.astype(np.float32))
        seconds = time.perf_counter() - started
        results["shap"][method] = {
            "rows": len(x_rows),
            "seconds": seconds,
            "rows_per_s": len(x_rows) / seconds,
            "max_abs_difference_to_weir": float(np.max(np.abs(values - weir_values))),
        }
        print(f"shap {method}: {results['shap'][method]}", flush=True)

    for method in ("exact", "permutation", "tree", "linear"):
        results[f"ratio_{method}"] = results["weir"][method]["rows_per_s"] / results["shap"][method]["rows_per_s"]
    path = BENCH / "results" / f"explain-{args.size}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

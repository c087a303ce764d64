"""The encoders benchmark: categorical encoding throughput, Weir against scikit-learn on
pandas, Polars, Spark MLlib and Ray Data preprocessors on the same data and semantics,
interleaved repetitions.

    .venv/bin/python bench/encoders_bench.py [--rows 10000000] [--reps 3] [--systems KEYS]
                                             [--weir target/release/weir]
    .venv/bin/python bench/encoders_bench.py --setup    (installs the peers, see below)

(KEYS are comma-separated out of weir2p, weir2, sklearn, polars, spark, ray; run it with
./.venv's Python from tests/run.sh, which has pyarrow and numpy for the data and the checks.)

Workload, the same for every system: ROWS rows generated here (seeded NumPy, written with
pyarrow under bench/data/encoders-ROWS/data when missing; 4 files, row groups of 128 Ki
rows, zstd): `id` int64 0..ROWS-1; three strings `c10`, `c1k`, `c100k` drawn from 10,
1,000 and 100,000 categories with a Zipf-like distribution (weight 1/rank^1.1, the ranks a
seeded permutation of the categories, so frequency is not sort order; `c10` mixes upper
case, lower case and `é`, so that sorting by code point matters), each with 2% nulls; ten
float64 columns `x0..x9` of different scales and shapes (normal, log-normal, uniform over
±1e6, exponential, integers 0..100 with many ties, heavy-tailed t, values near 1e9, prices
rounded to cents), each with 5% nulls. Then:

- `onehot` of `c10`, and of `c1k` with `max_categories = 32`;
- `ordinal` of `c100k`;
- `robust_scale` of `x0..x9`;
- every column, in the input's order with each one-hot column replaced where it stands by
  its 0/1 columns, as zstd Parquet (level 1; row groups of 131,072 rows where the writer
  takes a row count).

Semantics are scikit-learn's (1.7): `OneHotEncoder(sparse_output=False)`: the categories
sorted by code point, a null its own category (`None`, last), Float64 0/1 columns named
`{col}_{category}` (`{col}_None` for the null); with `max_categories = 32` the 31 most
frequent categories (the null counted as one) keep their columns and the rest share
`{col}_infrequent_sklearn` after them (a stable ascending sort of the counts drops the first
ones: a tie keeps the later category in sorted order). `OrdinalEncoder()`: the position in
the sorted categories as Float64, a null stays null (as scikit-learn keeps a NaN, see
below). `RobustScaler()`: (x - median) / (q75 - q25) with exact linear percentiles of the
non-null values (a range below 10 machine epsilons scales by 1), a null stays null.
frequent_categories() below is the `max_categories` rule, written once for the peers that
have no such option.

Systems (keys in brackets), each a whole process timed by `/usr/bin/time -f '%e %M'`:
- Weir, 2 processes x 1 worker and 1 process x 2 workers [weir2p, weir2]: `weir run JOB
  --json` with `onehot`, `onehot` (`max_categories = 32`), `ordinal` and `robust_scale`
  steps (STEPS; the job is written next to the data).
- scikit-learn on pandas [sklearn]: `pandas.read_parquet` (pyarrow; the strings as object
  columns with None for nulls) → a `ColumnTransformer` of `OneHotEncoder(sparse_output=
  False)`, `OneHotEncoder(sparse_output=False, max_categories=32)`, `OrdinalEncoder()` and
  `RobustScaler()` with pandas output (the ordinal column's nulls as NaN, see below) → the
  columns put in Weir's order → `pyarrow.Table.from_pandas` (NaN → null) →
  `pyarrow.parquet.write_table` (zstd level 1, 131,072-row groups). One core:
  scikit-learn's encoders and `nanpercentile` are single-threaded, and `n_jobs` would copy
  the frame into worker processes.
- Polars [polars]: lazy `scan_parquet`; the fit is one `collect_all` of the categories'
  counts (`group_by(col).len()`, nulls included), the distinct `c100k` values and
  `quantile(q, interpolation="linear")` of every `x` (nulls ignored); the transform is one
  lazy query: each string cast to an `Enum` of its sorted categories, its physical code
  compared with each frequent category's (`is_null()` for `{col}_None`, `is_in(codes)` for
  the infrequent ones) and cast to Float64; the ordinal the `Enum`'s physical code as
  Float64; `(x - median) / range`; `sink_parquet` (zstd level 1, 131,072-row groups), on all
  cores. Not `to_dummies`: it exists only on an eager DataFrame (the whole table in memory),
  writes UInt8 columns named `{col}_null` for the null and has no infrequent grouping, so it
  would need as many expressions to fix up as it saves.
- Spark MLlib [spark]: PySpark in local[*] mode; one aggregation for the exact quantiles
  (`percentile(x, array(0.25, 0.5, 0.75))`, exact with linear interpolation;
  `percentile_approx` and MLlib's `RobustScaler` are approximate) and the null count of each
  one-hot column, a `groupBy("c1k").count()` for the infrequent grouping, then
  `StringIndexer(stringOrderType="alphabetAsc", handleInvalid="keep")` on the three strings
  and `OneHotEncoder(dropLast=False)` on the first two, `vector_to_array` and one column per
  vector element; written with `spark.hadoop.parquet.compression.codec.zstd.level = 1`
  (Spark's row groups are sized in bytes, 128 MiB, not rows). `percentile` keeps a hash
  map of every distinct value (boxed) per column and task and merges them in one task: it
  is most of Spark's time (10-14 s of its 25-30 s at 200,000 rows on the 2-core
  development machine; `approxQuantile` with a relative error of 0, also exact, was no faster) and of
  its memory, hence a 12 GiB driver.
- Ray Data [ray]: `ray.data.read_parquet` → the string nulls filled with a sentinel (see
  below) → `materialize()` → the infrequent grouping of `c1k` (counts from `map_batches` of
  pandas `value_counts`, summed here) → `materialize()` → `OneHotEncoder`, `OrdinalEncoder`
  and `RobustScaler` from `ray.data.preprocessors`, each `fit` on that dataset, then their
  `transform`s → one `map_batches` that turns each one-hot list into Float64 columns and the
  sentinel's code back into a null → `write_parquet` (zstd level 1, 131,072-row groups);
  `ray.init(num_cpus=cores)`.

Where a peer cannot do what scikit-learn does by itself, and what is done instead (its
output is still checked against Weir's, so nothing here is taken on trust):
- scikit-learn itself: its encoders take a null as None or NaN, and treat them alike
  only in `OneHotEncoder` (a category of its own, last, named `{col}_None` or `{col}_nan`).
  `OrdinalEncoder` keeps only NaN as missing (`encoded_missing_value`, NaN by default);
  a None is a category like any other, sorted last and given the next code. Weir's
  `ordinal` keeps a null as null, which is scikit-learn's NaN behaviour, so the peer passes
  `c100k` with NaN for its nulls (the one-hot columns keep None, whose name `{col}_None` is
  Weir's).
- Polars, Spark and Ray have no `max_categories` with an infrequent column (Ray's
  `OneHotEncoder(max_categories=...)` keeps the top k of each batch, unions them over
  batches, breaks ties by order of appearance and encodes the rest as all zeros; Spark and
  Polars have nothing): each counts the categories with its own engine and the grouping
  follows frequent_categories() (scikit-learn's rule), by `is_in` (Polars), a `when`
  mapping the infrequent values to a sentinel label before the `StringIndexer` (Spark) or
  a pandas `where` to a sentinel before the `OneHotEncoder` (Ray); the sentinel's column
  is named `{col}_infrequent_sklearn`.
- Spark's `StringIndexer` puts a null into an extra last bucket (`handleInvalid="keep"`):
  that vector element becomes `{col}_None` where the column has nulls and is left out where
  it has none (scikit-learn has no `None` category then); for the ordinal a null index is
  made null again with `when(isNull)`. Spark sorts labels as Java strings (UTF-16 code
  units), which is code point order for every character below U+10000: the data has none
  above (the sentinel has, but its column is placed by name). The label order is Spark's own: the columns are emitted in its order, so a
  different order would fail the check.
- Ray's encoders refuse nulls (at fit and at transform): nulls become the sentinel
  "\\U0010ffff<null>", which sorts after every category, so the other categories keep
  their codes; its one-hot element is `{col}_None`, and its ordinal code is made null again.
- Ray's `RobustScaler` is approximate by design (a KLL sketch of float32 values, K = 800,
  from the `datasketches` package) and has no exact option: the `x*` columns of Ray are
  checked only for which rows are null, and the largest absolute difference from the
  reference on the sampled rows is recorded beside the check (`approximate`), not judged
  (it changes from run to run: the sketch is randomized).
  (Its zero-range case also differs, all zeros instead of a scale of 1; no column here has
  a zero range.) Everything else of Ray is checked exactly.

The peers run this very file (`encoders_bench.py peer sklearn|polars|spark|ray DATA OUT`,
which imports only its engine and what that engine needs) with the first Python of
bench/.venv-peers and ./.venv that imports the engine (and, for Ray, `datasketches`); a peer
neither has is skipped with a note. Their wall time includes starting Python and importing
the engine (and Spark's JVM, Ray's cluster); the time each measured inside itself
(`inner_s`: from before the first read to after the write) is recorded beside it. Spark's
JVM and Ray's workers are processes /usr/bin/time does not see: their peak RSS is not
reported.

Peers' setup (bench/peers.sh's pinned set, plus what this benchmark needs):

    .venv/bin/python bench/encoders_bench.py --setup

creates bench/.venv-peers if missing and runs `pip install` of PEER_PACKAGES into it. PySpark
needs Java 17+ on the PATH.

Every repetition runs every system once, in the order above rotated by one system per
repetition (as bench/peers.py does: on a VM a run straight after one that wrote gigabytes
can be slower). Each output is read back and compared with the reference's (Weir at 2
processes, else at 2 workers, else the first system that ran) and then deleted: the same
row count, the same column names in the same order, and on every 1024th id the same
values in every column (floats within 1e-9 relative, NaN = NaN, null = null; Ray's `x*`
only null against null, as above). A disagreement is recorded and printed with both
values, not fatal; a failed run (non-zero exit) is recorded with its last lines of stderr.

Report: wall time per system as the best of --reps (and the median), rows/s (input rows
over the best wall), peak RSS, output MiB and each system's best wall divided by Weir's
(2 processes and 2 workers), in bench/results/encoders-ROWS.json and
bench/results/encoders-ROWS.md, rewritten after every repetition. The machine's load
average is recorded before every run.
"""

import argparse
import datetime
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
# Every system, in the order the first repetition runs them (later ones rotate it).
SYSTEM_KEYS = ["weir2p", "weir2", "sklearn", "polars", "spark", "ray"]
# Whose values the others are checked against, in order of preference.
REFERENCE_KEYS = ["weir2p", "weir2"]
# The module each peer imports, and what else it needs.
PEER_MODULES = {"sklearn": ("sklearn", ["pandas", "pyarrow"]), "polars": ("polars", []), "spark": ("pyspark", []), "ray": ("ray", ["datasketches", "pandas"])}
# Spark's JVM and Ray's raylet and workers are processes the driver does not wait for:
# /usr/bin/time cannot see their memory.
RSS_UNMEASURED = {"spark", "ray"}
# Columns a system computes approximately by design: only null against null is checked.
APPROXIMATE = {"ray": "x*"}
RELATIVE_TOLERANCE = 1e-9
ROW_GROUP_ROWS = 128 * 1024
ZSTD_LEVEL = 1
FILES = 4
SEED = 20261207
# Interpreters a peer may run under, in order of preference (--setup makes the first).
PEERS_VENV = BENCH / ".venv-peers"
PEER_PYTHONS = [PEERS_VENV / "bin" / "python", Path(sys.executable)]
# bench/peers.sh's set (the same venv serves both), plus scikit-learn and Polars at ./.venv's
# versions and datasketches for Ray's RobustScaler.
PEER_PACKAGES = [
    "daft==0.7.26", "pyspark==4.3.0", "ray[data]==2.52.0", "matplotlib==3.10.7", "pandas==2.3.3", "numpy==2.3.4",
    "pyarrow==21.0.0", "onnxruntime==1.31.1", "duckdb==2.0.1",
    "scikit-learn==1.7.2", "polars==2.1.0", "datasketches==5.2.0",
]

# The data.
C10 = ["alpha", "Beta", "gamma", "Delta", "épsilon", "zeta", "Eta", "theta", "iota", "kappa"]
CATEGORIES = {"c10": C10, "c1k": [f"u{i}" for i in range(1_000)], "c100k": [f"k{i}" for i in range(100_000)]}
ZIPF_EXPONENT = 1.1
STRING_NULLS = 0.02
NUMERIC_NULLS = 0.05
NUMERIC = [f"x{i}" for i in range(10)]
INPUT_COLUMNS = ["id", *CATEGORIES, *NUMERIC]

# The workload: the one-hot columns with their max_categories, the ordinal column, the
# scaled columns, and the quantiles RobustScaler fits.
ONEHOT = {"c10": None, "c1k": 32}
ORDINAL = "c100k"
QUANTILES = (0.25, 0.5, 0.75)
STEPS = """[[step]]
op = "onehot"
columns = ["c10"]

[[step]]
op = "onehot"
columns = ["c1k"]
max_categories = 32

[[step]]
op = "ordinal"
columns = ["c100k"]

[[step]]
op = "robust_scale"
columns = ["x*"]
"""
# Sentinel labels for the peers that need them (no category of the data starts with U+10FFFF).
INFREQUENT = "\U0010ffff<infrequent>"
NULL = "\U0010ffff<null>"


def frequent_categories(counts: dict, max_categories):
    """scikit-learn's `OneHotEncoder` categories for a column whose category counts (None for
    the null) are `counts`: (the frequent ones in output order: sorted by code point, None
    last; the infrequent ones). With `max_categories` at most the number of categories (the
    infrequent column counts as one of them: at exactly that number one category is
    infrequent, alone), the `max_categories - 1` most frequent stay: a stable ascending sort
    of the counts in category order, all but its last `max_categories - 1` infrequent (so a
    tie keeps the later category), as `_identify_infrequent` does."""
    order = sorted(k for k in counts if k is not None) + ([None] if None in counts else [])
    if max_categories is None or max_categories > len(order):
        return order, []
    keep = max_categories - 1
    ascending = sorted(range(len(order)), key=lambda i: counts[order[i]])
    dropped = set(ascending[: len(order) - keep])
    return [c for i, c in enumerate(order) if i not in dropped], [c for i, c in enumerate(order) if i in dropped]


def onehot_name(column: str, category) -> str:
    """`get_feature_names_out`'s name for one category (None is the null)."""
    return f"{column}_{category}"


def infrequent_name(column: str) -> str:
    return f"{column}_infrequent_sklearn"


def robust_parameters(low: float, median: float, high: float):
    """RobustScaler's center and scale from the fitted quantiles (`_handle_zeros_in_scale`:
    a range below 10 machine epsilons scales by 1)."""
    scale = high - low
    if scale < 10 * sys.float_info.epsilon:
        scale = 1.0
    return median, scale


def in_order(names: dict) -> list:
    """The output's columns: the input's order, each one-hot column replaced by its columns
    (`names[column]`, a list) where it stands."""
    return [name for column in INPUT_COLUMNS for name in names.get(column, [column])]


# ---------------------------------------------------------------------------------------
# The peers (run as `encoders_bench.py peer ENGINE DATA OUT`; they import only their engine).


def peer_sklearn(data: Path, out: Path) -> dict:
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq
    import sklearn
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, RobustScaler

    started = time.perf_counter()
    frame = pd.read_parquet(data, engine="pyarrow")
    # OrdinalEncoder keeps only NaN as missing (None is a category of its own, coded last).
    frame[ORDINAL] = frame[ORDINAL].where(frame[ORDINAL].notna(), float("nan"))
    transformers = [
        (column, OneHotEncoder(sparse_output=False, max_categories=max_categories), [column])
        for column, max_categories in ONEHOT.items()
    ]
    transformers += [(ORDINAL, OrdinalEncoder(), [ORDINAL]), ("robust", RobustScaler(), NUMERIC)]
    transformer = ColumnTransformer(transformers, remainder="passthrough", verbose_feature_names_out=False)
    transformer.set_output(transform="pandas")
    result = transformer.fit_transform(frame)
    del frame
    names = {column: [n for n in result.columns if n.startswith(f"{column}_")] for column in ONEHOT}
    table = pa.Table.from_pandas(result[in_order(names)], preserve_index=False)
    del result
    pq.write_table(table, out / "data.parquet", compression="zstd", compression_level=ZSTD_LEVEL, row_group_size=ROW_GROUP_ROWS)
    return {"engine": "scikit-learn", "version": sklearn.__version__, "pandas": pd.__version__, "threads": 1, "inner_s": time.perf_counter() - started}


def peer_polars(data: Path, out: Path) -> dict:
    import polars as pl

    started = time.perf_counter()
    frame = pl.scan_parquet(str(data / "*.parquet"))
    # The fit: one collect_all (Polars shares the scan between the queries where it can).
    queries = [frame.group_by(column).len() for column in ONEHOT]
    queries.append(frame.select(pl.col(ORDINAL).drop_nulls().unique()))
    queries.append(frame.select([pl.col(x).quantile(q, interpolation="linear").alias(f"{x} {q}") for x in NUMERIC for q in QUANTILES]))
    *counted, distinct, quantiles = pl.collect_all(queries)
    counts = {column: dict(zip(found[column].to_list(), found["len"].to_list())) for column, found in zip(ONEHOT, counted)}
    quantile = quantiles.row(0, named=True)

    # The transform: each string's code in the Enum of its sorted categories, compared.
    categories = {column: sorted(k for k in counts[column] if k is not None) for column in ONEHOT}
    categories[ORDINAL] = sorted(distinct[ORDINAL].to_list())
    codes = [pl.col(column).cast(pl.Enum(categories[column])).to_physical().alias(f"{column}__code") for column in ONEHOT]
    expressions = {"id": [pl.col("id")]}
    names = {}
    for column, max_categories in ONEHOT.items():
        frequent, infrequent = frequent_categories(counts[column], max_categories)
        index = {category: i for i, category in enumerate(categories[column])}
        code = pl.col(f"{column}__code")
        dummies = [
            (pl.col(column).is_null() if category is None else (code == index[category]).fill_null(False)).cast(pl.Float64).alias(onehot_name(column, category))
            for category in frequent
        ]
        if infrequent:
            grouped = code.is_in([index[category] for category in infrequent if category is not None]).fill_null(False)
            if None in infrequent:
                grouped = grouped | pl.col(column).is_null()
            dummies.append(grouped.cast(pl.Float64).alias(infrequent_name(column)))
        expressions[column] = dummies
        names[column] = [d.meta.output_name() for d in dummies]
    expressions[ORDINAL] = [pl.col(ORDINAL).cast(pl.Enum(categories[ORDINAL])).to_physical().cast(pl.Float64)]
    for x in NUMERIC:
        center, scale = robust_parameters(*(quantile[f"{x} {q}"] for q in QUANTILES))
        expressions[x] = [((pl.col(x) - center) / scale).alias(x)]
    (
        frame.with_columns(codes)
        .select([e for column in INPUT_COLUMNS for e in expressions[column]])
        .sink_parquet(str(out / "data.parquet"), compression="zstd", compression_level=ZSTD_LEVEL, row_group_size=ROW_GROUP_ROWS)
    )
    return {"engine": "polars", "version": pl.__version__, "threads": pl.thread_pool_size(), "inner_s": time.perf_counter() - started}


def peer_spark(data: Path, out: Path) -> dict:
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    import pyspark
    from pyspark.ml.feature import OneHotEncoder, StringIndexer
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    cores = os.cpu_count()
    spark = (
        SparkSession.builder.master("local[*]")
        .config("spark.driver.memory", "12g")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", str(2 * cores))
        .config("spark.sql.parquet.compression.codec", "zstd")
        .config("spark.hadoop.parquet.compression.codec.zstd.level", str(ZSTD_LEVEL))
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    started = time.perf_counter()
    frame = spark.read.parquet(str(data))

    # One pass: the exact quantiles and each one-hot column's nulls.
    aggregates = [F.expr(f"percentile(`{x}`, array({', '.join(map(str, QUANTILES))}))").alias(x) for x in NUMERIC]
    aggregates += [F.sum(F.col(column).isNull().cast("long")).alias(f"{column}__nulls") for column in ONEHOT]
    stats = frame.agg(*aggregates).first()

    # The infrequent grouping: counts, scikit-learn's rule, infrequent values to a sentinel.
    has_null = {}
    grouped = frame
    for column, max_categories in ONEHOT.items():
        has_null[column] = stats[f"{column}__nulls"] > 0
        if max_categories is None:
            continue
        counts = {row[column]: row["count"] for row in frame.groupBy(column).count().collect()}
        frequent, infrequent = frequent_categories(counts, max_categories)
        if not infrequent:
            continue
        kept = [category for category in frequent if category is not None]
        value = F.col(column)
        if None in frequent:
            mapped = F.when(value.isNull(), F.lit(None).cast("string")).when(value.isin(kept), value)
        else:
            mapped = F.when(value.isin(kept), value)
            has_null[column] = False
        grouped = grouped.withColumn(column, mapped.otherwise(F.lit(INFREQUENT)))

    strings = [*ONEHOT, ORDINAL]
    indexer = StringIndexer(
        inputCols=strings, outputCols=[f"{c}__index" for c in strings], stringOrderType="alphabetAsc", handleInvalid="keep"
    ).fit(grouped)
    labels = dict(zip(strings, indexer.labelsArray))
    indexed = indexer.transform(grouped)
    encoder = OneHotEncoder(inputCols=[f"{c}__index" for c in ONEHOT], outputCols=[f"{c}__vector" for c in ONEHOT], dropLast=False).fit(indexed)
    encoded = encoder.transform(indexed)
    for column in ONEHOT:
        encoded = encoded.withColumn(f"{column}__array", vector_to_array(f"{column}__vector"))

    selected = {"id": [F.col("id")]}
    for column in ONEHOT:
        vector = F.col(f"{column}__array")
        # Spark's label order, the sentinel last; the null bucket (index = number of labels).
        order = [(i, label) for i, label in enumerate(labels[column]) if label != INFREQUENT]
        if has_null[column]:
            order.append((len(labels[column]), None))
        order += [(i, label) for i, label in enumerate(labels[column]) if label == INFREQUENT]
        selected[column] = [
            vector[i].alias(infrequent_name(column) if label == INFREQUENT else onehot_name(column, label)) for i, label in order
        ]
    selected[ORDINAL] = [F.when(F.col(ORDINAL).isNull(), F.lit(None).cast("double")).otherwise(F.col(f"{ORDINAL}__index")).alias(ORDINAL)]
    for x in NUMERIC:
        center, scale = robust_parameters(*stats[x])
        selected[x] = [((F.col(x) - F.lit(center)) / F.lit(scale)).alias(x)]
    result = encoded.select(*[e for column in INPUT_COLUMNS for e in selected[column]])
    result.write.mode("overwrite").parquet(str(out))
    inner = time.perf_counter() - started
    spark.stop()
    return {"engine": "pyspark", "version": pyspark.__version__, "threads": cores, "inner_s": inner}


def peer_ray(data: Path, out: Path) -> dict:
    import numpy as np
    import pandas as pd
    import ray
    from ray.data.preprocessors import OneHotEncoder, OrdinalEncoder, RobustScaler

    cores = os.cpu_count()
    ray.init(num_cpus=cores, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    started = time.perf_counter()
    strings = [*ONEHOT, ORDINAL]

    def fill_nulls(batch: pd.DataFrame) -> pd.DataFrame:
        for column in strings:
            batch[column] = batch[column].where(batch[column].notna(), NULL)
        return batch

    dataset = ray.data.read_parquet(str(data)).map_batches(fill_nulls, batch_format="pandas").materialize()

    # The infrequent grouping: counts, scikit-learn's rule, infrequent values to a sentinel.
    kept = {}
    for column, max_categories in ONEHOT.items():
        if max_categories is None:
            continue

        def value_counts(batch: pd.DataFrame, column=column) -> pd.DataFrame:
            counts = batch[column].value_counts()
            return pd.DataFrame({"value": counts.index.to_numpy(dtype=object), "count": counts.to_numpy()})

        summed = dataset.map_batches(value_counts, batch_format="pandas").to_pandas().groupby("value")["count"].sum()
        frequent, infrequent = frequent_categories({None if v == NULL else v: int(n) for v, n in summed.items()}, max_categories)
        if infrequent:
            kept[column] = {NULL if category is None else category for category in frequent}
    if kept:

        def group(batch: pd.DataFrame) -> pd.DataFrame:
            for column, frequent in kept.items():
                batch[column] = batch[column].where(batch[column].isin(frequent), INFREQUENT)
            return batch

        dataset = dataset.map_batches(group, batch_format="pandas").materialize()

    onehot = OneHotEncoder(columns=list(ONEHOT)).fit(dataset)
    ordinal = OrdinalEncoder(columns=[ORDINAL]).fit(dataset)
    scaler = RobustScaler(columns=NUMERIC).fit(dataset)

    layout = {}
    for column in ONEHOT:
        positions = onehot.stats_[f"unique_values({column})"]
        order = [(i, label) for label, i in positions.items() if label not in (NULL, INFREQUENT)]
        order.sort()
        if NULL in positions:
            order.append((positions[NULL], None))
        if INFREQUENT in positions:
            order.append((positions[INFREQUENT], INFREQUENT))
        layout[column] = [(i, infrequent_name(column) if label == INFREQUENT else onehot_name(column, label)) for i, label in order]
    codes = ordinal.stats_[f"unique_values({ORDINAL})"]
    null_code = codes.get(NULL)
    if null_code is not None and null_code != len(codes) - 1:
        raise RuntimeError(f"the null sentinel has code {null_code} of {len(codes)}: the other codes moved")

    def assemble(batch: pd.DataFrame) -> pd.DataFrame:
        columns = {"id": batch["id"].to_numpy()}
        for column in INPUT_COLUMNS[1:]:
            if column in ONEHOT:
                matrix = np.stack(batch[column].to_numpy()).astype(np.float64)
                for i, name in layout[column]:
                    columns[name] = np.ascontiguousarray(matrix[:, i])
            elif column == ORDINAL:
                values = batch[column].to_numpy(dtype=np.float64)
                if null_code is not None:
                    values[values == null_code] = np.nan
                columns[column] = values
            else:
                columns[column] = batch[column].to_numpy(dtype=np.float64)
        return pd.DataFrame(columns)

    transformed = scaler.transform(ordinal.transform(onehot.transform(dataset)))
    transformed.map_batches(assemble, batch_format="pandas").write_parquet(
        str(out), compression="zstd", compression_level=ZSTD_LEVEL, row_group_size=ROW_GROUP_ROWS
    )
    inner = time.perf_counter() - started
    ray.shutdown()
    return {"engine": "ray", "version": ray.__version__, "threads": cores, "inner_s": inner}


PEERS = {"sklearn": peer_sklearn, "polars": peer_polars, "spark": peer_spark, "ray": peer_ray}


def peer_python(key: str):
    """The first interpreter of PEER_PYTHONS that imports the peer's engine and what it needs,
    with the engine's version, or None."""
    module, needs = PEER_MODULES[key]
    probe = "; ".join(f"import {m}" for m in [module, *needs]) + f"; print({module}.__version__)"
    for python in PEER_PYTHONS:
        if not python.exists():
            continue
        proc = subprocess.run([str(python), "-c", probe], capture_output=True, text=True)
        if proc.returncode == 0:
            return str(python), proc.stdout.strip()
    return None


def setup():
    """bench/.venv-peers with PEER_PACKAGES (as bench/peers.sh makes it, plus this benchmark's)."""
    if not (PEERS_VENV / "bin" / "python").exists():
        subprocess.run(["python3", "-m", "venv", str(PEERS_VENV)], check=True)
    subprocess.run(
        [str(PEERS_VENV / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", *PEER_PACKAGES], check=True
    )


# ---------------------------------------------------------------------------------------
# The data.


def category_cdf(column: str):
    """The cumulative distribution over CATEGORIES[column]: weight 1/rank^ZIPF_EXPONENT, the
    ranks a seeded permutation of the categories."""
    import numpy as np

    n = len(CATEGORIES[column])
    weights = 1.0 / np.arange(1, n + 1) ** ZIPF_EXPONENT
    probabilities = np.empty(n)
    probabilities[np.random.default_rng([SEED, n]).permutation(n)] = weights / weights.sum()
    return np.cumsum(probabilities)


NUMERIC_MAKERS = [
    lambda rng, n: rng.normal(0.0, 1.0, n),
    lambda rng, n: rng.normal(1000.0, 250.0, n),
    lambda rng, n: rng.lognormal(0.0, 1.0, n),
    lambda rng, n: rng.uniform(-1e6, 1e6, n),
    lambda rng, n: rng.exponential(1e-3, n),
    lambda rng, n: rng.integers(0, 101, n).astype("float64"),
    lambda rng, n: rng.normal(-5.0, 0.01, n),
    lambda rng, n: rng.standard_t(3, n) * 50.0,
    lambda rng, n: rng.normal(1e9, 1e6, n),
    lambda rng, n: (rng.lognormal(3.0, 0.8, n) * 100).round() / 100,
]


def generate(rows: int, out: Path):
    """ROWS rows in FILES zstd files under `out`, row groups of ROW_GROUP_ROWS, chunk by chunk."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    cdfs = {column: category_cdf(column) for column in CATEGORIES}
    dictionaries = {column: pa.array(names, pa.string()) for column, names in CATEGORIES.items()}
    per_file = -(-rows // FILES)
    chunk_rows = 8 * ROW_GROUP_ROWS
    start = 0
    for index in range(FILES):
        file_rows = min(per_file, rows - start)
        if file_rows <= 0:
            break
        writer = None
        done = 0
        while done < file_rows:
            n = min(chunk_rows, file_rows - done)
            rng = np.random.default_rng([SEED, start + done])
            columns = {"id": pa.array(np.arange(start + done, start + done + n, dtype=np.int64))}
            for column, cdf in cdfs.items():
                codes = np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), len(cdf) - 1)
                columns[column] = pc.take(dictionaries[column], pa.array(codes, mask=rng.random(n) < STRING_NULLS))
            for x, make in zip(NUMERIC, NUMERIC_MAKERS):
                columns[x] = pa.array(make(rng, n), mask=rng.random(n) < NUMERIC_NULLS)
            table = pa.table(columns)
            if writer is None:
                writer = pq.ParquetWriter(tmp / f"part-{index:03d}.parquet", table.schema, compression="zstd")
            writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
            done += n
        writer.close()
        start += file_rows
    tmp.rename(out)


def find_data(rows: int) -> Path:
    """bench/data/encoders-ROWS/data, generated when missing."""
    data = BENCH / "data" / f"encoders-{rows}" / "data"
    if not any(data.glob("*.parquet")):
        print(f"generating {rows:,} rows under {data}", flush=True)
        shutil.rmtree(data, ignore_errors=True)
        generate(rows, data)
    return data


# ---------------------------------------------------------------------------------------
# The harness.


def weir_job(data: Path, out: Path) -> str:
    return f"""name = "bench-encoders"

[source]
uri = {json.dumps(str(data))}

{STEPS}
[sink]
uri = {json.dumps(str(out))}
mode = "overwrite"
"""


def timed(command) -> dict:
    """Runs `command` under /usr/bin/time (as bench/peers.py does); a failed run is recorded
    with its exit status and last lines instead of stopping the benchmark."""
    load = os.getloadavg()[0]
    try:
        proc = subprocess.run(["/usr/bin/time", "-f", "TIME %e %M", *command], capture_output=True, text=True, cwd=REPO)
    except OSError as error:
        return {"wall_s": float("nan"), "peak_rss_mib": 0.0, "load_before": load, "stdout": "", "failed": str(error)}
    found = re.findall(r"TIME ([\d.]+) (\d+)", proc.stderr)
    wall, rss = found[-1] if found else ("nan", "0")
    run = {"wall_s": float(wall), "peak_rss_mib": int(rss) / 1024, "load_before": round(load, 2), "stdout": proc.stdout}
    if proc.returncode != 0:
        tail = [line for line in proc.stderr.splitlines() if not line.startswith("TIME ") and line.strip()][-5:]
        run["failed"] = f"exit {proc.returncode}: " + " | ".join(tail)
    return run


def last_json(stdout: str):
    """The last line of `stdout` that is a JSON object, or None."""
    for line in reversed((stdout or "").strip().splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def read_output(out: Path) -> dict:
    """The output's row count, bytes, columns (as `name: type`) and every column on every
    1024th id, sorted by id (read a batch at a time: the whole output need not fit)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    # Not Weir's own bookkeeping under _weir/ (its manifest; staged files before a commit).
    files = sorted(f for f in out.rglob("*.parquet") if "_weir" not in f.relative_to(out).parts)
    if not files:
        raise ValueError(f"no Parquet files in {out}")
    schema = pq.read_schema(files[0])
    rows = 0
    sampled = []
    for f in files:
        reader = pq.ParquetFile(f)
        rows += reader.metadata.num_rows
        for batch in reader.iter_batches(batch_size=ROW_GROUP_ROWS, columns=schema.names):
            table = pa.Table.from_batches([batch])
            sampled.append(table.filter(pc.equal(pc.bit_wise_and(table["id"], 1023), 0)))
    sample = pa.concat_tables(sampled, promote_options="permissive").sort_by("id")
    return {
        "rows": rows,
        "files": len(files),
        "bytes": sum(f.stat().st_size for f in files),
        "columns": [f"{f.name}: {f.type}" for f in schema],
        "ids": sample["id"].to_pylist(),
        "values": {name: sample[name].to_pylist() for name in schema.names},
    }


def same_value(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) or isinstance(b, float):
        if isinstance(a, bool) or isinstance(b, bool):
            return False
        a, b = float(a), float(b)
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        if math.isinf(a) or math.isinf(b):
            return a == b
        return abs(a - b) <= RELATIVE_TOLERANCE * max(abs(a), abs(b))
    return a == b


def approximate_columns(key: str, names: list) -> set:
    pattern = APPROXIMATE.get(key)
    if pattern is None:
        return set()
    return {name for name in names if re.fullmatch(pattern.replace("*", ".*"), name)}


def compare(key: str, got: dict, reference: dict) -> dict:
    """Checks one output against the reference's; the verdict goes into the run."""
    check = {"rows_written": got["rows"], "files": got["files"], "output_bytes": got["bytes"], "sampled": len(got["ids"])}
    problems, disagreements = [], []
    if got["rows"] != reference["rows"]:
        problems.append(f"wrote {got['rows']} rows, the reference {reference['rows']}")
    names = [c.split(":")[0] for c in got["columns"]]
    reference_names = [c.split(":")[0] for c in reference["columns"]]
    if names != reference_names:
        missing = [n for n in reference_names if n not in names]
        extra = [n for n in names if n not in reference_names]
        problems.append(
            f"columns differ from the reference's ({len(names)} against {len(reference_names)}; "
            f"missing {missing[:5]}, extra {extra[:5]}" + ("; same names, other order" if not missing and not extra else "") + ")"
        )
    if got["ids"] != reference["ids"]:
        problems.append(f"other sampled ids ({len(got['ids'])} against {len(reference['ids'])})")
    else:
        approximate = approximate_columns(key, names)
        deviations = {}
        for name in [n for n in reference_names if n in names]:
            pairs = zip(got["ids"], got["values"][name], reference["values"][name])
            if name in approximate:
                bad = [(i, a, b) for i, a, b in pairs if (a is None) != (b is None)]
                both = [abs(a - b) for a, b in zip(got["values"][name], reference["values"][name]) if a is not None and b is not None]
                deviations[name] = max(both, default=0.0)
            else:
                bad = [(i, a, b) for i, a, b in pairs if not same_value(a, b)]
            if bad:
                i, a, b = bad[0]
                disagreements.append({"column": name, "rows": len(bad), "first_id": i, "value": a, "reference_value": b})
        if deviations:
            check["approximate"] = {"columns": sorted(deviations), "checked": "null against null only", "max_abs_difference": deviations}
        if disagreements:
            problems.append(
                "; ".join(f"{d['column']} differs on {d['rows']} sampled rows (id {d['first_id']}: {d['value']!r} vs {d['reference_value']!r})" for d in disagreements[:6])
                + (f"; and {len(disagreements) - 6} more columns" if len(disagreements) > 6 else "")
            )
    if disagreements:
        check["disagreements"] = disagreements
    if problems:
        check["check_failed"] = "; ".join(problems)
    return check


def column_summary(columns: list) -> str:
    """`columns` (`name: type`) grouped by the input column each comes from."""
    parts = []
    for column in INPUT_COLUMNS:
        mine = [c for c in columns if c.split(":")[0] == column or (column in ONEHOT and c.startswith(f"{column}_"))]
        types = sorted({c.split(": ", 1)[1] for c in mine})
        if column in ONEHOT:
            parts.append(f"`{column}_*` ({len(mine)} columns, {'/'.join(types)})")
        elif mine:
            parts.append(f"`{column}` ({'/'.join(types)})")
    return ", ".join(parts)


def write_report(rows: int, reps: int, systems: dict, runs: dict, columns: dict, reference_key, notes: list, data: Path):
    """Writes results/encoders-ROWS.{json,md} from the runs so far."""
    results = []
    for key, measured in runs.items():
        if not measured:
            continue
        name = systems[key][0]
        succeeded = [m for m in measured if "failed" not in m]
        result = {"system": name, "key": key, "reps": len(measured), "columns": columns.get(key)}
        if succeeded:
            walls = sorted(m["wall_s"] for m in succeeded)
            best = min(succeeded, key=lambda m: m["wall_s"])
            result.update(
                wall_s=walls[0],
                median_wall_s=walls[(len(walls) - 1) // 2],
                rows_per_s=rows / walls[0],
                peak_rss_mib=None if key in RSS_UNMEASURED else best["peak_rss_mib"],
            )
            reported = last_json(best.get("stdout"))
            if reported is not None:
                result["reported"] = reported
            if "output_bytes" in best:
                result["output_mib"] = best["output_bytes"] / 2**20
            if "rows_written" in best:
                result["rows_written"] = best["rows_written"]
            bad = [m for m in succeeded if "check_failed" in m]
            if bad:
                result["check_failed"] = bad[0]["check_failed"]
                result["disagreements"] = bad[0].get("disagreements", [])
            approximate = [m["approximate"] for m in succeeded if "approximate" in m]
            if approximate:
                result["approximate"] = approximate[0]
            result["checked"] = any("sampled" in m for m in succeeded)
        else:
            result["failed"] = measured[0]["failed"]
        result["runs"] = [{k: v for k, v in m.items() if k != "stdout"} for m in measured]
        results.append(result)
    by_key = {r["key"]: r for r in results}
    weir2p = by_key.get("weir2p", {}).get("wall_s")
    weir2 = by_key.get("weir2", {}).get("wall_s")
    for result in results:
        if "wall_s" in result:
            result["ratio_to_weir_2_processes"] = result["wall_s"] / weir2p if weir2p else None
            result["ratio_to_weir_2_workers"] = result["wall_s"] / weir2 if weir2 else None
    machine = {
        "cores": os.cpu_count(),
        "ram_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30),
        "platform": platform.platform(),
    }
    report = {
        "date": datetime.date.today().isoformat(),
        "rows": rows,
        "reps": reps,
        "data": str(data),
        "machine": machine,
        "workload": {
            "categories": {column: len(names) for column, names in CATEGORIES.items()},
            "zipf_exponent": ZIPF_EXPONENT,
            "string_nulls": STRING_NULLS,
            "numeric": NUMERIC,
            "numeric_nulls": NUMERIC_NULLS,
            "weir_steps": STEPS,
        },
        "reference": reference_key,
        "relative_tolerance": RELATIVE_TOLERANCE,
        "notes": notes,
        "results": results,
    }
    out_dir = BENCH / "results"
    out_dir.mkdir(exist_ok=True)
    (out_dir / f"encoders-{rows}.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")

    ratio = lambda value: "n/a" if value is None else f"{value:.2f}"  # noqa: E731
    loads = [m["load_before"] for measured in runs.values() for m in measured if "load_before" in m]
    lines = [
        f"Encoders ({rows:,} rows: onehot `c10` (10 categories), onehot `c1k` (1,000, `max_categories = 32`), ordinal `c100k` "
        f"(100,000), robust_scale `x0..x9` → zstd Parquet), {report['date']}, {machine['cores']} cores, "
        f"{machine['ram_gib']} GiB; best of {reps} interleaved run(s), the order rotated by one system each repetition"
        + (f"; load average before the runs {min(loads):.1f}–{max(loads):.1f}" if loads else ""),
        "",
        "| system | wall s (best) | median s | rows/s | peak RSS MiB | output MiB | vs Weir 2 processes | vs Weir 2 workers | check |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in results:
        if "failed" in r:
            peak = max(run["peak_rss_mib"] for run in r["runs"])
            lines.append(f"| {r['system']} | failed: {r['failed'][:160]} | | | {peak:.0f} before it failed | | | | |")
            continue
        if "check_failed" in r:
            check = f"**{r['check_failed'][:300]}**"
        elif r["key"] == reference_key:
            check = "reference"
        else:
            check = "same" if r.get("checked") else "not checked"
        if "approximate" in r and "check_failed" not in r:
            largest = max(r["approximate"]["max_abs_difference"].values(), default=0.0)
            check += f" (`{APPROXIMATE[r['key']]}` approximate: nulls only; max abs difference {largest:.2g})"
        rss = "n/a" if r["peak_rss_mib"] is None else f"{r['peak_rss_mib']:.0f}"
        lines.append(
            f"| {r['system']} | {r['wall_s']:.2f} | {r['median_wall_s']:.2f} | {r['rows_per_s']:,.0f} | {rss} | "
            + (f"{r['output_mib']:,.1f} | " if "output_mib" in r else "n/a | ")
            + f"{ratio(r['ratio_to_weir_2_processes'])} | {ratio(r['ratio_to_weir_2_workers'])} | {check} |"
        )
    inner = [f"{r['system']} {r['reported']['inner_s']:.2f} s" for r in results if "inner_s" in r.get("reported", {})]
    lines += [
        "",
        f"Check: row count, column names in order and every column on every 1024th id against "
        f"{systems[reference_key][0] if reference_key else 'no reference'}'s (floats within {RELATIVE_TOLERANCE:g} relative, "
        "null = null). Wall: the whole process (/usr/bin/time), Python's start and imports (Spark's JVM, Ray's cluster) "
        "included for the peers"
        + (f"; measured inside the peers' processes (best run): {', '.join(inner)}" if inner else "")
        + ". Peak RSS: the largest single process (not measured for Spark's JVM and Ray's workers).",
        "",
        "Weir's steps (scikit-learn's semantics; the peers as described in bench/encoders_bench.py):",
        "",
        "```toml",
        STEPS.strip(),
        "```",
    ]
    reference_columns = columns.get(reference_key) if reference_key else None
    if reference_columns:
        lines += ["", f"Output columns, {systems[reference_key][0]}: {len(reference_columns)}: " + column_summary(reference_columns) + "."]
        for key, cols in columns.items():
            if key == reference_key or cols is None:
                continue
            differ = [c for c in cols if c not in reference_columns]
            lines.append(f"- {systems[key][0]}: " + ("the same names and types." if not differ else "writes " + ", ".join(f"`{c}`" for c in differ[:8]) + (" …" if len(differ) > 8 else "") + "."))
    lines += [f"\n{note}" for note in notes]
    (out_dir / f"encoders-{rows}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--weir", default=str(REPO / "target" / "release" / "weir"))
    parser.add_argument("--systems", default=None, help=f"comma-separated keys out of {','.join(SYSTEM_KEYS)} (default: all)")
    parser.add_argument("--setup", action="store_true", help="install the peers into bench/.venv-peers and exit")
    args = parser.parse_args()
    if args.setup:
        setup()
        return
    keys = args.systems.split(",") if args.systems else list(SYSTEM_KEYS)
    unknown = set(keys) - set(SYSTEM_KEYS)
    if unknown:
        parser.error(f"unknown systems {sorted(unknown)}; known: {', '.join(SYSTEM_KEYS)}")
    notes = [f"Weir: {args.weir}."]
    pythons = {}
    for key in PEERS:
        if key not in keys:
            continue
        found = peer_python(key)
        if found is None:
            module, needs = PEER_MODULES[key]
            message = f"{key} was not run: neither bench/.venv-peers nor {sys.executable} imports {', '.join([module, *needs])} (see --setup)."
            print(message, flush=True)
            notes.append(message)
            keys.remove(key)
        else:
            pythons[key] = found[0]
            notes.append(f"{key}: {PEER_MODULES[key][0]} {found[1]} from {os.path.relpath(found[0], REPO)}.")

    data = find_data(args.rows)
    work = BENCH / "data" / f"encoders-{args.rows}"
    work.mkdir(parents=True, exist_ok=True)

    def weir(key: str, flags: list) -> list:
        job = work / f"encoders-{key}.toml"
        job.write_text(weir_job(data, work / f"out-{key}"))
        return [args.weir, "run", str(job), "--json", *flags]

    def peer(key: str) -> list:
        return [pythons[key], str(Path(__file__).resolve()), "peer", key, str(data), str(work / f"out-{key}")]

    cores = os.cpu_count()
    every = {
        "weir2p": ("weir 2 processes x 1 worker", lambda: weir("weir2p", ["--processes", "2", "--workers", "1"])),
        "weir2": ("weir 2 workers", lambda: weir("weir2", ["--workers", "2"])),
        "sklearn": ("scikit-learn on pandas (1 core)", lambda: peer("sklearn")),
        "polars": ("Polars (lazy, streaming sink)", lambda: peer("polars")),
        "spark": (f"Spark MLlib (local[{cores}])", lambda: peer("spark")),
        "ray": (f"Ray Data preprocessors ({cores} CPUs)", lambda: peer("ray")),
    }
    systems = {key: (every[key][0], every[key][1](), work / f"out-{key}") for key in SYSTEM_KEYS if key in keys}
    reference_key = next((k for k in REFERENCE_KEYS if k in systems), next(iter(systems), None))

    runs = {key: [] for key in systems}
    columns = {}
    reference = None
    order = list(systems.items())
    for rep in range(args.reps):
        samples = {}
        start = rep % max(len(order), 1)
        for key, (name, command, out) in order[start:] + order[:start]:
            if out.exists():
                shutil.rmtree(out)
            out.mkdir(parents=True)
            run = timed(command)
            if "failed" not in run:
                try:
                    got = read_output(out)
                    samples[key] = (run, got)
                    columns.setdefault(key, got["columns"])
                except Exception as error:  # an unreadable output is this system's failure
                    run["failed"] = f"output unreadable: {error}"
            runs[key].append(run)
            outcome = run.get("failed") or "{:.2f} s, {:.0f} MiB".format(run["wall_s"], run["peak_rss_mib"])
            print(f"{name}: {outcome}", flush=True)
            shutil.rmtree(out, ignore_errors=True)
        if reference is None:
            found = [k for k in [*REFERENCE_KEYS, *systems] if k in samples]
            if found:
                reference_key = reference_key if reference_key in samples else found[0]
                reference = samples[reference_key][1]
        for key, (run, got) in samples.items():
            if reference is not None:
                run.update(compare(key, got, reference))
                if "check_failed" in run:
                    print(f"{systems[key][0]}: CHECK FAILED: {run['check_failed']}", flush=True)
        write_report(args.rows, args.reps, systems, runs, columns, reference_key, notes, data)


if __name__ == "__main__":
    if sys.argv[1:2] == ["peer"]:
        if len(sys.argv) != 5 or sys.argv[2] not in PEERS:
            sys.exit(f"usage: {sys.argv[0]} peer {'|'.join(PEERS)} DATA_DIR OUT_DIR")
        print(json.dumps(PEERS[sys.argv[2]](Path(sys.argv[3]), Path(sys.argv[4]))))
    else:
        main()

"""Deterministic benchmark dataset generator (seeded): N rows of 32 float features with 5%
nulls, an int64 id and a string category, written as Parquet with row groups of 128 Ki rows.

The features are correlated through 8 latent factors of distinct variances (plus noise),
so their principal components are well separated and every system's PCA agrees (with
independent features the eigenvalues tie and the components are arbitrary).

    python bench/gen_data.py ROWS OUT_DIR [--files K]
"""

import argparse
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

FEATURES = 32
ROW_GROUP = 128 * 1024
CHUNK = 1 << 20


LATENT = 8
LOADINGS = np.random.default_rng(7).normal(size=(LATENT, FEATURES))
LATENT_SCALE = np.sqrt(np.arange(LATENT, 0, -1, dtype=float) * 2.0)


def chunk(rng, start, rows):
    columns = {"id": pa.array(np.arange(start, start + rows, dtype=np.int64))}
    latent = rng.normal(size=(rows, LATENT)) * LATENT_SCALE
    features = latent @ LOADINGS + rng.normal(scale=0.5, size=(rows, FEATURES))
    for f in range(FEATURES):
        values = f + (1 + f / 8) * features[:, f]
        columns[f"f_{f:02d}"] = pa.array(values, mask=rng.random(rows) < 0.05)
    columns["category"] = pa.array(rng.choice(np.array(["alpha", "beta", "gamma", "delta"]), rows))
    return pa.table(columns)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("rows", type=int)
    parser.add_argument("out", type=Path)
    parser.add_argument("--files", type=int, default=4)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(42)
    per_file = -(-args.rows // args.files)
    start = 0
    for index in range(args.files):
        rows = min(per_file, args.rows - start)
        if rows <= 0:
            break
        with pq.ParquetWriter(args.out / f"part-{index:03d}.parquet", chunk(rng, 0, 1).schema, compression="zstd") as writer:
            done = 0
            while done < rows:
                n = min(CHUNK, rows - done)
                writer.write_table(chunk(rng, start + done, n), row_group_size=ROW_GROUP)
                done += n
        start += rows


if __name__ == "__main__":
    main()

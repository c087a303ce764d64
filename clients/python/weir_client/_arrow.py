"""pyarrow, imported in one place.

pyarrow ships no type information, so mypy sees these modules as `Any`; the ignores also
stay quiet where stubs (pyarrow-stubs) are installed.
"""

import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
import pyarrow.dataset as ds  # type: ignore[import-untyped, unused-ignore]
import pyarrow.fs as pafs  # type: ignore[import-untyped, unused-ignore]
import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]
import pyarrow.parquet.encryption as pe  # type: ignore[import-untyped, unused-ignore]

__all__ = ["pa", "ds", "pafs", "pe", "pq"]

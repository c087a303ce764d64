#!/usr/bin/env bash
# Reads Weir's outputs (plain and partitioned) with Spark as well: too heavy for every CI
# run (PySpark is a 400 MB wheel and needs Java 17 or later), so separate. Installs PySpark
# into .venv-spark (with the test requirements), Java from Debian's packages when absent
# (as root, with apt), then runs the readers' tests of tests/e2e/test_partitions.py, which
# use Spark when it can start.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v java >/dev/null && [ -z "${JAVA_HOME:-}" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openjdk-17-jre-headless >/dev/null
  else
    echo "spark_readers.sh: Java 17 or later is needed (install it, or set JAVA_HOME)" >&2
    exit 1
  fi
fi
if [ ! -x .venv-spark/bin/python ]; then
  python3 -m venv .venv-spark
fi
.venv-spark/bin/python -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt pyspark==4.3.0
cargo build --bin weir
.venv-spark/bin/python -c "import pyspark; print('pyspark', pyspark.__version__)"
WEIR_REQUIRE_SPARK=1 .venv-spark/bin/python -m pytest tests/e2e/test_partitions.py -q -rs -p no:cacheprovider -k "reads" "$@"

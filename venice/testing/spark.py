"""Whether the Spark push can run here, for tests and benchmarks (the Kafka policy's twin).

The Spark tests need pyspark (``pip install -e '.[spark]'``), Java and the jars
``deploy/spark/fetch.sh`` puts in ``deploy/spark/lib`` (spark-avro for Avro input).
``deploy/setup.sh`` brings all three.
"""

from __future__ import annotations

import importlib.util
import os
import shutil

from venice.push.spark import spark_jars_dir

__all__ = ["spark_available", "spark_jars_dir"]


def spark_available() -> str | None:
    """``None`` when a Spark push can run here, else the reason it cannot."""
    if importlib.util.find_spec("pyspark") is None:
        return "pyspark is not installed (pip install -e '.[spark]', or deploy/setup.sh)"
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        return "java is not installed"
    if not any(spark_jars_dir().glob("spark-avro_*.jar")):
        return f"the spark-avro jar is not in {spark_jars_dir()} (deploy/spark/fetch.sh fetches it)"
    return None

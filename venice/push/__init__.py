"""The push job: bulk-load a data file into a store as a new version.

* :mod:`venice.push.formats` - streaming readers for JSONL, CSV, Avro, Parquet (+ gzip)
* :mod:`venice.push.infer` - key/value Avro schemas inferred from a whole file
* :mod:`venice.push.records` - input record -> (key, value) data, CSV coercion, duplicates
* :mod:`venice.push.columnar` - Avro encoding of whole Arrow columns (the vectorized encoder)
* :mod:`venice.push.job` - ``push()`` / ``run_push()``: the controller and pub-sub protocol
* :mod:`venice.push.control` - the controller calls of a push, synchronous (the Spark driver's)
* :mod:`venice.push.spark` - the push on Apache Spark: ``push_dataframe()``, ``push_input()``
* :mod:`venice.push.spark_tasks` - what its executors run (no pyspark import)

Nothing is imported here, so reading files or inferring schemas does not pull in
httpx, tqdm, pyspark or a pub-sub backend.
"""

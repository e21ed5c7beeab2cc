"""The push job: bulk-load a data file into a store as a new version.

* :mod:`venice.push.formats` - streaming readers for JSONL, CSV, Avro, Parquet (+ gzip)
* :mod:`venice.push.infer` - key/value Avro schemas inferred from a whole file
* :mod:`venice.push.records` - input record -> (key, value) data, CSV coercion, duplicates
* :mod:`venice.push.job` - ``push()`` / ``run_push()``: the controller and pub-sub protocol

Nothing is imported here, so reading files or inferring schemas does not pull in
httpx, tqdm or a pub-sub backend.
"""

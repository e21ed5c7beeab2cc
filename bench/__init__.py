"""Side-by-side benchmarks of venice-py and Redis on loopback (``python -m bench``).

The pure parts (result aggregation, ratios, markdown) live in :mod:`bench.results`
and are unit-tested; :mod:`bench.cli` starts the processes and runs the load.
See ``bench/README.md`` for what every figure means.
"""

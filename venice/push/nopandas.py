"""Keeping pandas out of the ``venice push`` process.

pyarrow asks once per process whether pandas is installed, on the first ``pa.array`` of
a Python list (to recognise pandas objects), and when it is, imports all of it: 0.3 to
0.7 s on the bench machine, a fifth of the CPU of a 100k-record push, spent on a library
the push never uses (it reads files, not DataFrames). :func:`leave_pandas_out` lets
pyarrow ask while an import hook refuses pandas, so pyarrow notes "no pandas" and does
not ask again; the hook is removed at once, so a later ``import pandas`` works as ever
(pyarrow then just does not treat pandas objects specially in this process).

Only for a process that handles no pandas objects through pyarrow: the CLI's local push
calls it; :func:`venice.push.job.push` used as a library does not.
"""

from __future__ import annotations

import importlib.abc
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

__all__ = ["leave_pandas_out"]


class _RefusePandas(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname == "pandas" or fullname.startswith("pandas."):
            raise ImportError("pandas is left out of this venice push process")
        return None


def leave_pandas_out() -> bool:
    """Settle pyarrow's pandas question as "not installed" without importing pandas;
    ``False`` (nothing done) when pandas is imported already."""
    if "pandas" in sys.modules:
        return False
    import pyarrow as pa

    hook = _RefusePandas()
    sys.meta_path.insert(0, hook)
    try:
        pa.array([None])  # pyarrow's one question, answered while pandas cannot be imported
    finally:
        sys.meta_path.remove(hook)
    return True

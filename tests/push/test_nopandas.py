"""leave_pandas_out: pyarrow settles its pandas question without importing pandas (each
case in a fresh interpreter, since the question is asked once per process)."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def _run(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_records_are_put_in_columns_without_importing_pandas_and_pandas_still_imports() -> None:
    out = _run(
        """
        import sys
        from venice.push.nopandas import leave_pandas_out
        assert leave_pandas_out() is True
        import pyarrow as pa
        batch = pa.RecordBatch.from_struct_array(pa.array([{"key": "a", "n": 1}, {"key": "b", "n": None}]))
        print(batch.to_pylist(), "pandas" in sys.modules)
        import pandas
        print(pandas.DataFrame({"x": [1, 2]})["x"].sum(), "pandas" in sys.modules)
        """
    )
    assert out.splitlines() == ["[{'key': 'a', 'n': 1}, {'key': 'b', 'n': None}] False", "3 True"]


def test_without_it_pyarrow_imports_pandas() -> None:
    """The cost it avoids is real: the first pa.array of a list imports pandas."""
    assert _run("import sys, pyarrow as pa; pa.array([None]); print('pandas' in sys.modules)") == "True"


def test_nothing_is_done_once_pandas_is_imported() -> None:
    out = _run(
        """
        import pandas, pyarrow as pa
        from venice.push.nopandas import leave_pandas_out
        print(leave_pandas_out(), pa.array(pandas.Series([1, None], dtype="Int64")).to_pylist())
        """
    )
    assert out == "False [1, None]"

"""Tables on disk: every CSV and Parquet file attnscope writes goes through :func:`write_table`.

A table is a ``pandas.DataFrame`` or rows of dicts (one dict per row). Rows
become a frame with the given columns, or the keys in first-seen order; cells
keep the values they were given (an int column with a gap stays ints, the gap
an empty cell), so a notebook opens any result in one line::

    pandas.read_csv("out/tables/target.csv")        # or read_parquet(".../records.parquet")

Judged side-effect records (one row per judged question, columns in
:mod:`attnscope.analyses.side_effects`) are read back typed with
:func:`read_records`; :func:`table_text` formats rows for an append-only
ledger (``attnscope.runner.records``).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

Rows = Sequence[Mapping[str, Any]]
BOOL_COLUMNS = ("judged_yes", "evasion")
INT_COLUMNS = ("seed", "attr_distance")
FLOAT_COLUMNS = ("text_similarity",)


def frame(rows: pd.DataFrame | Rows, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """``rows`` as a frame with ``columns`` (default: keys in first-seen order; extra keys dropped).

    Cells are kept as given (object dtype), missing ones are NaN.
    """
    if isinstance(rows, pd.DataFrame):
        return rows if columns is None else rows.reindex(columns=list(columns))
    rows = list(rows)
    if columns is None:
        seen: dict[str, None] = {}
        for row in rows:
            seen.update(dict.fromkeys(row))
        columns = list(seen)
    return pd.DataFrame([[row.get(c, math.nan) for c in columns] for row in rows], columns=list(columns),
                        dtype=object)


def table_text(rows: pd.DataFrame | Rows, columns: Sequence[str] | None = None, *, header: bool = True) -> str:
    """The CSV text of ``rows`` (``\\n`` line ends, NaN and ``None`` as empty cells)."""
    return frame(rows, columns).to_csv(index=False, header=header, lineterminator="\n")


def write_table(rows: pd.DataFrame | Rows, path: str | os.PathLike, columns: Sequence[str] | None = None) -> Path:
    """Write ``rows`` to ``path``: CSV for ``.csv``, Parquet (pyarrow) for ``.parquet``; returns the path.

    The file is written next to ``path`` first and then renamed, so a reader
    never sees half a table.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    table = frame(rows, columns)
    if path.suffix == ".parquet":
        typed = table.convert_dtypes()  # one type per column where the cells agree (ints with gaps: Int64)
        mixed = [column for column in typed.columns if typed[column].dtype == object]
        for column in mixed:  # cells of several types, e.g. ints and "" for a gap
            typed[column] = typed[column].astype("string")
        typed.to_parquet(temporary, index=False, engine="pyarrow")
    else:
        temporary.write_text(table_text(table), encoding="utf-8")
    os.replace(temporary, path)
    return path


def write_tables(rows: pd.DataFrame | Rows, stem: str | os.PathLike,
                 columns: Sequence[str] | None = None) -> list[Path]:
    """Write ``stem.csv`` and ``stem.parquet``; returns both paths."""
    return [write_table(rows, Path(f"{stem}{suffix}"), columns) for suffix in (".csv", ".parquet")]


def _truthy(value: Any) -> bool:
    return value is True or str(value).strip().lower() in ("true", "1", "yes")


def read_records(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Judged records from a CSV (written by :func:`write_table`), one dict per row: every cell a
    string except ``judged_yes``/``evasion`` (bool), ``seed``/``attr_distance`` (int, when filled)
    and ``text_similarity`` (float; empty → NaN). An empty file holds no records."""
    path = Path(path)
    if path.stat().st_size == 0:
        return []
    rows = pd.read_csv(path, dtype=str, keep_default_na=False).to_dict("records")
    for row in rows:
        for key in BOOL_COLUMNS:
            if key in row:
                row[key] = _truthy(row[key])
        for key in INT_COLUMNS:
            if row.get(key) not in (None, ""):
                row[key] = int(row[key])
        for key in FLOAT_COLUMNS:
            if key in row:
                row[key] = float(row[key]) if row[key] != "" else math.nan
    return rows

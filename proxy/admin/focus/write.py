"""FOCUS rows to a file: CSV (always) or Parquet (``pip install 'openai-meter[parquet]'``).

CSV: a header of the column names; decimals as plain exact strings (never exponent notation),
date/times as ISO 8601 UTC with ``Z``, booleans ``true``/``false``, null as an empty field.
Parquet: decimals as ``decimal128(38, 10)`` (exact), date/times as UTC timestamps, JSON columns
as strings.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

from proxy.admin.focus.columns import COLUMN_KINDS, COLUMN_NAMES

PARQUET_EXTRA: Final = "pip install 'openai-meter[parquet]'"


class ExportError(ValueError):
    """The output cannot be written as asked; the message is for the user."""


def cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return f"{value:f}"
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return str(value)


def to_csv(rows: Sequence[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMN_NAMES)
    for row in rows:
        writer.writerow([cell(row.get(name)) for name in COLUMN_NAMES])
    return buffer.getvalue()


def write_parquet(rows: Sequence[dict[str, Any]], path: Path) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ExportError(f"Parquet output needs pyarrow: {PARQUET_EXTRA}") from None
    types = {
        "decimal": pa.decimal128(38, 10),
        "datetime": pa.timestamp("us", tz="UTC"),
        "string": pa.string(),
        "json": pa.string(),
        "integer": pa.int64(),
        "boolean": pa.bool_(),
    }
    schema = pa.schema([(name, types[COLUMN_KINDS[name]]) for name in COLUMN_NAMES])
    columns = {name: [row.get(name) for row in rows] for name in COLUMN_NAMES}
    table = pa.Table.from_pydict(columns, schema=schema)
    pq.write_table(table, str(path))


def write(rows: Sequence[dict[str, Any]], out: str | None) -> str | None:
    """Write to ``out`` (``.csv`` or ``.parquet``); without ``out`` return the CSV text."""
    if out is None or out == "-":
        return to_csv(rows)
    path = Path(out)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        write_parquet(rows, path)
    elif suffix == ".csv":
        path.write_text(to_csv(rows), encoding="utf-8")
    else:
        raise ExportError(f"--out {out!r}: the file must end in .csv or .parquet")
    return None

"""A job's result rows as clients read them: JSON lines (nested like ``/v1/predict``), CSV and
Parquet (flat columns). The ``score`` command writes the same formats."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ai_photo_detector.batch.scoring import RESULT_FIELDS

FORMATS = {
    "jsonl": "application/x-ndjson",
    "csv": "text/csv; charset=utf-8",
    "parquet": "application/vnd.apache.parquet",
}


def nested(row: dict[str, Any]) -> dict[str, Any]:
    """One row in the shape of a ``/v1/predict`` answer (or an error), with its place."""
    if row.get("error_code"):
        return {
            "item": row["item"],
            "name": row["name"],
            "error": {"code": row["error_code"], "message": row["error_message"]},
        }
    return {
        "item": row["item"],
        "name": row["name"],
        "label": row["label"],
        "band": row["band"],
        "probability": row["probability"],
        "scores": row["scores"],
        "reasons": [r for r in (row.get("reasons") or "").split(",") if r],
        "model": {"name": row["model_name"], "version": row["model_version"]},
        "image": {k: row[k] for k in ("width", "height", "format", "bytes", "sha256")},
    }


def jsonl_chunks(pages: Iterable[list[dict[str, Any]]]) -> Iterator[bytes]:
    for page in pages:
        yield "".join(json.dumps(nested(row)) + "\n" for row in page).encode("utf-8")


def _flat(row: dict[str, Any]) -> dict[str, Any]:
    flat = dict(row)
    flat["scores"] = json.dumps(row["scores"]) if row.get("scores") is not None else ""
    return flat


def csv_chunks(pages: Iterable[list[dict[str, Any]]]) -> Iterator[bytes]:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=RESULT_FIELDS, extrasaction="ignore")
    writer.writeheader()
    for page in pages:
        for row in page:
            writer.writerow(_flat(row))
        yield buffer.getvalue().encode("utf-8")
        buffer.seek(0)
        buffer.truncate()
    if buffer.tell():
        yield buffer.getvalue().encode("utf-8")


def parquet_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("pyarrow") is not None


def write_parquet(pages: Iterable[list[dict[str, Any]]], path: Path) -> int:
    """Write the rows page by page (memory stays one page); returns the row count."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
        [
            ("item", pa.int64()),
            ("name", pa.string()),
            ("label", pa.string()),
            ("band", pa.string()),
            ("probability", pa.float64()),
            ("scores", pa.string()),  # JSON: labels differ between models
            ("reasons", pa.string()),
            ("model_name", pa.string()),
            ("model_version", pa.string()),
            ("width", pa.int64()),
            ("height", pa.int64()),
            ("format", pa.string()),
            ("bytes", pa.int64()),
            ("sha256", pa.string()),
            ("error_code", pa.string()),
            ("error_message", pa.string()),
        ]
    )
    count = 0
    with pq.ParquetWriter(str(path), schema) as writer:
        for page in pages:
            if not page:
                continue
            flat = [_flat(row) for row in page]
            columns = {name: [r.get(name) for r in flat] for name in schema.names}
            writer.write_table(pa.table(columns, schema=schema))
            count += len(page)
    return count


class RowSink:
    """Writes rows to a file in the format its name says (.jsonl, .csv or .parquet), page by
    page; for the ``score`` command."""

    def __init__(self, path: Path) -> None:
        suffix = path.suffix.lower().lstrip(".")
        if suffix not in FORMATS:
            raise ValueError(f"{path}: the output must end in .jsonl, .csv or .parquet")
        self.path = path
        self.format = suffix

    def write(self, pages: Iterable[list[dict[str, Any]]]) -> int:
        count = 0

        def counted() -> Iterator[list[dict[str, Any]]]:
            nonlocal count
            for page in pages:
                count += len(page)
                yield page

        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.format == "parquet":
            return write_parquet(pages, self.path)
        chunks = jsonl_chunks(counted()) if self.format == "jsonl" else csv_chunks(counted())
        with self.path.open("wb") as out:
            for chunk in chunks:
                out.write(chunk)
        return count

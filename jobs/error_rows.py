"""`facesweep errors OUTPUT`: a job's error rows, selected by DuckDB from the rows the job's own reader
fetched (`workers/output/reader.py`), so local, s3:// and az:// outputs read alike and DuckDB needs no
extension (nothing is downloaded when it runs)."""

from __future__ import annotations

import duckdb

from facesweep.workers.output.reader import read_output

COLUMNS = ("uri", "error_kind", "error")
"""What each error row shows."""
QUERY = f"SELECT {', '.join(COLUMNS)} FROM rows WHERE status = 'error' ORDER BY uri"


def error_rows(output: str) -> tuple[list[tuple[str, str | None, str | None]], int]:
    """The error rows of the facesweep output at `output` (COLUMNS, by uri) and how many images it has;
    the reader's OutputError or StorageError when it cannot be read."""
    rows = read_output(output, ("uri", "status", *COLUMNS[1:]))
    with duckdb.connect() as db:
        db.register("rows", rows)
        return db.sql(QUERY).fetchall(), rows.num_rows

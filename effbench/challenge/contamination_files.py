"""The training side of `effbench contamination` (contamination.py): a training file streamed as
records (line number, text, continues the previous record's paragraph), never loaded whole.

By extension:
  - .jsonl / .ndjson: one JSON value a line; its text = all its string values (nested objects and
    lists included, keys not), joined by a line break; `field` = only that top-level key. Blank
    lines are skipped; a line that is not JSON is an error naming the file and line.
  - .csv / .tsv: one row an example, all cells; a header row is detected (csv.Sniffer) and then
    not scanned; `field` = only that column (needs a header). Reported line: where the row starts.
  - .txt: plain text. Each line is scanned; n-grams run across single line breaks (an item wrapped
    over lines is still found) but not across blank lines, so both "one example per line" and
    "examples separated by blank lines" work. Reported line: where the matching n-gram starts.
Files are read as UTF-8 (invalid bytes replaced).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Iterator

from effbench.contracts import EffbenchError

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv", ".txt": "txt"}


def training_format(path: Path, field_name: str | None = None) -> str:
    """The reader for `path`, or a one-line EffbenchError (missing, a folder, unknown extension)."""
    if not path.exists():
        raise EffbenchError(f"{path}: training file does not exist (argument TRAIN_FILE)")
    if not path.is_file():
        raise EffbenchError(f"{path}: not a file (argument TRAIN_FILE)")
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise EffbenchError(f"{path}: unsupported extension {path.suffix or '(none)'!r}; use one of {', '.join(FORMATS)} (argument TRAIN_FILE)")
    if field_name is not None and fmt == "txt":
        raise EffbenchError(f"{path}: --field applies to .jsonl and .csv files, not .txt")
    return fmt


def _strings(v, out: list[str]) -> None:
    if isinstance(v, str):
        out.append(v)
    elif isinstance(v, dict):
        for x in v.values():
            _strings(x, out)
    elif isinstance(v, list):
        for x in v:
            _strings(x, out)


def _text_of(obj) -> str:
    if type(obj) is dict:
        vals = [v for v in obj.values() if type(v) is str]
        if len(vals) == len(obj):
            return "\n".join(vals)
    out: list[str] = []
    _strings(obj, out)
    return "\n".join(out)


def read_jsonl(path: Path, field_name: str | None = None) -> Iterator[tuple[int, str, bool]]:
    loads = json.loads
    with path.open(encoding="utf-8", errors="replace") as f:
        for line_no, line in enumerate(f, 1):
            try:
                obj = loads(line)
            except json.JSONDecodeError as e:
                if not line.strip():
                    continue
                raise EffbenchError(f"{path}: line {line_no}: not valid JSON ({e.msg}, column {e.colno})") from None
            if field_name is not None:
                if not isinstance(obj, dict) or field_name not in obj:
                    raise EffbenchError(f"{path}: line {line_no}: no field {field_name!r} (option --field)")
                obj = obj[field_name]
            yield line_no, _text_of(obj), False


def read_csv(path: Path, field_name: str | None = None, delimiter: str = ",") -> Iterator[tuple[int, str, bool]]:
    csv.field_size_limit(max(csv.field_size_limit(), 1 << 30))
    with path.open(newline="", encoding="utf-8", errors="replace") as f:
        sample = f.read(1 << 16)
        f.seek(0)
        try:
            header = bool(sample.strip()) and csv.Sniffer().has_header(sample)
        except csv.Error:
            header = False
        reader = csv.reader(f, delimiter=delimiter)
        column = None
        start = 1
        try:
            if header:
                names = next(reader, [])
                start = reader.line_num + 1
                if field_name is not None:
                    if field_name not in names:
                        raise EffbenchError(f"{path}: line 1: no column {field_name!r} in the header {names} (option --field)")
                    column = names.index(field_name)
            elif field_name is not None:
                raise EffbenchError(f"{path}: line 1: no header row, so no column {field_name!r} (option --field)")
            for row in reader:
                if not row:  # a blank line
                    start = reader.line_num + 1
                    continue
                if column is not None:
                    text = row[column] if column < len(row) else ""
                else:
                    text = "\n".join(c for c in row if c)
                yield start, text, False
                start = reader.line_num + 1
        except csv.Error as e:
            raise EffbenchError(f"{path}: line {reader.line_num}: not valid CSV ({e})") from None


def read_txt(path: Path) -> Iterator[tuple[int, str, bool]]:
    with path.open(encoding="utf-8", errors="replace") as f:
        cont = False
        for line_no, line in enumerate(f, 1):
            if line.isspace() or not line:
                cont = False
                continue
            yield line_no, line, cont
            cont = True


def read_training(path: Path, field_name: str | None = None) -> Iterator[tuple[int, str, bool]]:
    """Stream (line number, text, continues the previous paragraph) records of a training file."""
    fmt = training_format(path, field_name)
    if fmt == "jsonl":
        return read_jsonl(path, field_name)
    if fmt in ("csv", "tsv"):
        return read_csv(path, field_name, "\t" if fmt == "tsv" else ",")
    return read_txt(path)

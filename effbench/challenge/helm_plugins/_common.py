"""Readers shared by the plugin scenarios: published CSV / JSON files under `<output_path>/data`,
with one-line EffbenchErrors that name the file (and line) at fault and where the dataset is
published. Nothing here downloads anything."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

from helm.benchmark.scenarios.scenario import CORRECT_TAG, Output, Reference

from effbench.contracts import EffbenchError


def data_path(output_path: str, relative: str) -> Path:
    """`<output_path>/data/<relative>`: where effbench links the user's copy of a dataset."""
    return Path(output_path) / "data" / relative


def require_file(path: Path, dataset: str, published: str) -> Path:
    if not path.is_file():
        raise EffbenchError(f"{path}: not found; scenario {dataset} reads its published files here ({published})")
    return path


def row_error(path: Path, line: int, problem: str) -> EffbenchError:
    return EffbenchError(f"{path}:{line}: {problem}")


def read_csv(path: Path, header: Sequence[str] | None) -> Iterator[tuple[int, list[str] | dict[str, str]]]:
    """Rows of a CSV file with the line number each starts on. With `header`, the file's first row
    must hold (at least) these columns and rows come as dicts; without, rows come as lists."""
    with path.open(newline="", encoding="utf-8-sig") as f:  # a BOM is not part of the header
        reader = csv.reader(f)
        columns: list[str] | None = None
        start = 1
        try:
            for row in reader:
                line, start = start, reader.line_num + 1
                if header is not None and columns is None:
                    columns = [c.strip() for c in row]
                    missing = [c for c in header if c not in columns]
                    if missing:
                        raise row_error(path, line, f"header lacks column(s) {', '.join(missing)} (expected {','.join(header)})")
                    continue
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue  # blank line
                if columns is not None:
                    if len(row) != len(columns):
                        raise row_error(path, line, f"{len(row)} fields, header has {len(columns)}")
                    yield line, dict(zip(columns, row))
                else:
                    yield line, row
        except csv.Error as e:
            raise row_error(path, start, f"not valid CSV ({e})") from None
        except UnicodeDecodeError as e:
            raise EffbenchError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    if header is not None and columns is None:
        raise row_error(path, 1, f"empty file (expected header {','.join(header)})")


def read_json_array(path: Path) -> Iterator[tuple[int, object]]:
    """Items of a file holding one JSON array, each with the line it starts on."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise EffbenchError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    decoder = json.JSONDecoder()
    pos, line = 0, 1

    def skip_ws(i: int) -> int:
        while i < len(text) and text[i] in " \t\r\n\ufeff":
            i += 1
        return i

    def advance(to: int) -> None:
        nonlocal pos, line
        line += text.count("\n", pos, to)
        pos = to

    advance(skip_ws(0))
    if not text.startswith("[", pos):
        raise row_error(path, line, "expected a JSON array of records")
    advance(skip_ws(pos + 1))
    if text.startswith("]", pos):
        return
    while True:
        try:
            item, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise row_error(path, e.lineno, f"not valid JSON ({e.msg})") from None
        yield line, item
        advance(skip_ws(end))
        if text.startswith(",", pos):
            advance(skip_ws(pos + 1))
        elif text.startswith("]", pos):
            return
        else:
            raise row_error(path, line, "expected ',' or ']' after a record")


def binary_label(value: str, path: Path, line: int, column: str = "label") -> int:
    v = value.strip()
    if v not in ("0", "1"):
        raise row_error(path, line, f"column {column} is {v[:20]!r}, expected 0 or 1")
    return int(v)


def choice_references(choices: Sequence[str], correct: int) -> list[Reference]:
    """Multiple-choice references in the order given; `correct` indexes the right one."""
    return [Reference(Output(text=c), tags=[CORRECT_TAG] if i == correct else []) for i, c in enumerate(choices)]


YES_NO = ("Yes", "No")


def yes_no_references(yes: bool) -> list[Reference]:
    return choice_references(YES_NO, 0 if yes else 1)

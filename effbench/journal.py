"""The journal: every finished result appended to OUT/journal.jsonl as its batch lands.

A `kill -9` loses at most the batch in flight (each batch is one unbuffered write; the page cache
survives a killed process, so no fsync per batch: it would cost throughput to guard against power
loss, which is not the failure this is for). `--resume` reads it back; a torn last line, the
mark of a kill mid-write, is dropped with a warning. The header pins the plan: resuming against
a different plan (other suite, submission or options) is refused, not silently merged.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Iterable, Literal, Union

from pydantic import Field, TypeAdapter, ValidationError
from typing_extensions import NotRequired, TypedDict

from effbench.contracts import Completion, EffbenchError, GenerationRequest, GenerationResult, Timings, TokenLogprob

JOURNAL_NAME = "journal.jsonl"
JOURNAL_VERSION = 1


# The shape of each journal line, checked strictly on read (a string where a number belongs is
# refused, every key the journal always writes is required) so that a damaged or foreign journal
# is one error naming its line and field, not a crash or a wrong score later. Unknown keys are
# ignored: a newer effbench may add fields. TypedDicts, not the dataclasses of contracts.py: their
# defaults would let a missing key pass silently.
class _TokenRecord(TypedDict):
    text: str
    logprob: float
    top_logprobs: list[tuple[str, float]]
    token_id: int | None


class _CompletionRecord(TypedDict):
    text: str
    tokens: list[_TokenRecord]
    finish_reason: str


class _TimingsRecord(TypedDict):
    queued: float
    started: float | None
    first_token: float | None
    finished: float | None


class _ResultRecord(TypedDict):
    kind: Literal["result"]
    request_id: str
    completions: list[_CompletionRecord]
    prompt_tokens: int
    output_tokens: int
    timings: _TimingsRecord
    batch_id: int
    batch_size: int
    computed_tokens: int
    cached_tokens: NotRequired[int]  # absent in journals written before prefix reuse
    error: str | None


class _HeaderRecord(TypedDict):
    kind: Literal["header"]
    version: int
    plan_digest: str
    submission: NotRequired[str]
    suite: NotRequired[str]
    requests: NotRequired[int]


class _ExecuteRecord(TypedDict):
    kind: Literal["execute"]
    started: float
    deadline: float | None
    order: str
    requests: int


class _DeadlineRecord(TypedDict):
    kind: Literal["deadline"]
    at: float
    cancelled: int
    not_started: int


_RECORD = TypeAdapter(Annotated[Union[_HeaderRecord, _ResultRecord, _ExecuteRecord, _DeadlineRecord], Field(discriminator="kind")])


def plan_digest(requests: Iterable[GenerationRequest]) -> str:
    """A hash of what will be asked (ids and prompts and parameters), to match a journal to a plan."""
    h = hashlib.sha256()
    for r in requests:
        h.update(json.dumps([r.id, r.prompt, r.max_tokens, list(r.stop_sequences), r.temperature, r.num_completions,
                             r.top_k_per_token, r.echo_prompt], ensure_ascii=False).encode())
    return h.hexdigest()[:24]


def result_to_json(r: GenerationResult) -> dict:
    return asdict(r)


def result_from_json(d: dict) -> GenerationResult:
    """A result from a record already checked against _ResultRecord (read_journal does)."""
    completions = tuple(
        Completion(
            text=c["text"],
            tokens=tuple(
                TokenLogprob(t["text"], t["logprob"], tuple((a, b) for a, b in t["top_logprobs"]), t["token_id"])
                for t in c["tokens"]
            ),
            finish_reason=c["finish_reason"],
        )
        for c in d["completions"]
    )
    return GenerationResult(
        request_id=d["request_id"],
        completions=completions,
        prompt_tokens=d["prompt_tokens"],
        output_tokens=d["output_tokens"],
        timings=Timings(**d["timings"]),
        batch_id=d["batch_id"],
        batch_size=d["batch_size"],
        computed_tokens=d["computed_tokens"],
        cached_tokens=d.get("cached_tokens", 0),  # absent in journals written before prefix reuse
        error=d["error"],
    )


class Journal:
    """Append-only; one JSON line per result, one unbuffered write per batch. A write that fails
    (disk full) is cut back off the file, so the journal keeps only whole lines: every result
    journaled before stays, and nothing is left in a buffer for close() to fail on again."""

    def __init__(self, path: Path, header: dict, append: bool = False):
        self.path = path
        try:
            self._f = path.open("ab" if append else "wb", buffering=0)
        except OSError as e:
            if (err := out_error(path.parent, e)) is None:
                raise
            raise err from e
        if not append:
            self._write([{"kind": "header", "version": JOURNAL_VERSION, **header}])

    def _write(self, records: list[dict]) -> None:
        data = memoryview("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8"))
        start = os.fstat(self._f.fileno()).st_size
        try:
            while data:
                data = data[self._f.write(data):]
        except OSError as e:
            os.ftruncate(self._f.fileno(), start)
            if (err := out_error(self.path.parent, OSError(e.errno, e.strerror, str(self.path)))) is None:
                raise
            raise err from e

    def append(self, results: list[GenerationResult]) -> None:
        self._write([{"kind": "result", **result_to_json(r)} for r in results])

    def mark(self, kind: str, **fields) -> None:
        """An event line (start of execution, deadline reached, worker restarted)."""
        self._write([{"kind": kind, **fields}])

    def close(self) -> None:
        self._f.close()


def read_journal(path: Path) -> tuple[dict, list[GenerationResult], list[dict]]:
    """(header, results, events), every line checked before anything runs. A LAST line that is
    not valid JSON (a kill mid-write) is dropped with a warning; invalid JSON anywhere else, or a
    line of the wrong shape anywhere, means the file was damaged otherwise: refused."""
    if not path.is_file():
        raise EffbenchError(f"{path}: no journal to resume from (option --resume)")
    lines = path.read_text(encoding="utf-8", errors="replace").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    header: dict | None = None
    results: list[GenerationResult] = []
    events: list[dict] = []
    for i, line in enumerate(lines, start=1):
        try:
            rec = _RECORD.validate_json(line, strict=True)
        except ValidationError as e:
            first = e.errors(include_url=False)[0]
            if first["type"] == "json_invalid":
                if i == len(lines):
                    warnings.warn(f"{path}:{i}: torn last journal line dropped (not valid JSON); its batch will run again")
                    _truncate_last_line(path, len(lines) - 1)
                    break
                raise EffbenchError(f"{path}:{i}: corrupt journal line (not valid JSON: {first['msg']})") from None
            raise EffbenchError(f"{path}:{i}: {_shape_error(first)}") from None
        kind = rec["kind"]
        if (kind == "header") != (i == 1):
            raise EffbenchError(f"{path}:{i}: field 'kind': {kind!r} record; the header must be line 1 and only line 1")
        if kind == "header":
            if rec["version"] != JOURNAL_VERSION:
                raise EffbenchError(f"{path}:{i}: field 'version': journal version {rec['version']}, this effbench reads"
                                    f" version {JOURNAL_VERSION}; start a new --out instead of --resume")
            header = {k: v for k, v in rec.items() if k != "kind"}
        elif kind == "result":
            results.append(result_from_json(rec))
        else:
            events.append(dict(rec))
    if header is None:
        raise EffbenchError(f"{path}:1: journal has no header line")
    return header, results, events


def _shape_error(err: dict) -> str:
    """One pydantic error as "field 'completions.0.text': <what is wrong>, got <value> (result record)"."""
    loc = [str(x) for x in err["loc"]]
    if err["type"] == "union_tag_not_found":
        return "field 'kind': missing"
    if err["type"] == "union_tag_invalid":
        return f"field 'kind': {_short(err['input']['kind'])} is not a journal record kind (header, result, execute, deadline)"
    if not loc:
        return f"not a journal record: {err['msg']} (got {_short(err['input'])})"
    kind, field = loc[0], ".".join(loc[1:])
    if err["type"] == "missing":
        return f"field '{field}': missing ({kind} record)"
    return f"field '{field}': {err['msg']}, got {_short(err['input'])} ({kind} record)"


def _short(value) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."


def _truncate_last_line(path: Path, keep_lines: int) -> None:
    """Cut the torn line off so that appends start on a fresh line."""
    data = path.read_bytes()
    pos = 0
    for _ in range(keep_lines):
        pos = data.index(b"\n", pos) + 1
    with path.open("r+b") as f:
        f.truncate(pos)


# errno -> which of the output folder's problems it is
_FULL = {errno.ENOSPC, errno.EDQUOT}
_READ_ONLY = {errno.EROFS, errno.EACCES, errno.EPERM}
_NOT_A_FOLDER = {errno.ENOTDIR, errno.EEXIST}


def out_error(out: Path, err: OSError) -> EffbenchError | None:
    """The one-line error for a failed write into the output folder `out` (a file, not a folder;
    read-only; disk full), saying what the journal keeps and how to go on; None when `err` is
    not such a failure or not about `out` (the caller re-raises it). A write that fails on a
    full disk carries no file name (the error comes from write(), not open()): it is taken to
    be out's when out's file system is (nearly) full now."""
    where = Path(os.path.abspath(err.filename)) if err.filename else None
    root = Path(os.path.abspath(out))
    if where is not None and where != root and root not in where.parents:
        return None
    if err.errno in _NOT_A_FOLDER:  # the file in the way: OUT itself, a folder above it, or one inside it
        start = where or root
        file = next((p for p in (start, *start.parents) if p.exists()), start)
        if file.is_dir():
            return None
        return EffbenchError(f"{file}: is a file, not a folder, in the way of the output folder {out};"
                             " give another --out (or remove the file)")
    if err.errno in _FULL:
        if where is None and not _nearly_full(root):
            return None
        what, todo = "no space left on device", "free space"
    elif err.errno in _READ_ONLY and where is not None:
        what, todo = f"read-only folder ({err.strerror})", "make it writable"
    else:
        return None
    target = ("writing into it" if where is None else "creating it" if where == root
              else f"writing {where.relative_to(root)}")
    n = _journaled(root / JOURNAL_NAME)
    if n:
        then = (f"the journal {out / JOURNAL_NAME} keeps the {n} results computed so far:"
                f" {todo} and run `effbench run --resume {out}`")
    else:
        then = f"{todo} and run again, or give another --out"
    return EffbenchError(f"{out}: {what} {target}; {then}")


def _nearly_full(folder: Path) -> bool:
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    return shutil.disk_usage(existing).free < 1 << 20


def _journaled(path: Path) -> int:
    """Results in a journal, counted without checking it (for an error message)."""
    if not path.is_file():
        return 0
    with path.open(encoding="utf-8", errors="replace") as f:
        return sum(1 for line in f if line.startswith('{"kind": "result"'))


def budget_timeline(results: list[GenerationResult], events: list[dict]) -> tuple[dict[str, float], float]:
    """(request id -> budget seconds used when its result landed, total budget seconds used).
    The budget clock runs from each execution's start (a resumed run has several) to its last
    result; time between a kill and the resume is not counted."""
    starts = sorted(e["started"] for e in events if e["kind"] == "execute")
    at: dict[str, float] = {}
    spent = 0.0
    for i, t0 in enumerate(starts):
        t1 = starts[i + 1] if i + 1 < len(starts) else float("inf")
        seg = [r for r in results if r.timings.finished is not None and t0 <= r.timings.finished < t1]
        for r in seg:
            at[r.request_id] = spent + (r.timings.finished - t0)
        spent += max((r.timings.finished - t0 for r in seg), default=0.0)
    return at, spent

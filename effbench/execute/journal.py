"""The journal: every finished result appended to OUT/journal.jsonl as its batch lands.

A `kill -9` loses at most the batch in flight (each batch is one unbuffered write; the page cache
survives a killed process, so no fsync per batch: it would cost throughput to guard against power
loss, which is not the failure this is for). `--resume` reads it back; a torn last line, the
mark of a kill mid-write, is ignored on read and cut off only when `--resume` appends (reading
never writes: `report` or `simulate` during a live run must not cut that run's journal). The
header pins the plan (a digest of every request) and the submission (a fingerprint of its
files): resuming against another is refused, naming what changed, not silently merged. What
one line may hold, checked strictly on read: journal_records.py.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import warnings
from dataclasses import asdict, fields
from pathlib import Path
from typing import Iterable

from effbench.atomic import write_text_atomic
from effbench.contracts import EffbenchError, GenerationRequest, GenerationResult
from effbench.execute.journal_records import BadRecord, is_torn, parse_record, result_from_json, result_to_json

JOURNAL_NAME = "journal.jsonl"
# 2: the plan digest covers every request field (1 left out top_p and seed); the header has the
# submission's fingerprint. Version 1 journals are still read and resumed (without the check).
JOURNAL_VERSION = 2
READS_VERSIONS = (1, 2)


def plan_digest(requests: Iterable[GenerationRequest], version: int = JOURNAL_VERSION) -> str:
    """A hash of what will be asked, to match a journal to a plan: every field of every request
    (all of GenerationRequest's that make its identity, so a field added later is covered without
    a change here; the plan's token ids are not: they follow from the prompt and the tokenizer). A
    version 1 journal's digest is computed as version 1 did, so that it can still be resumed."""
    h = hashlib.sha256()
    for r in requests:
        if version == 1:
            h.update(json.dumps([r.id, r.prompt, r.max_tokens, list(r.stop_sequences), r.temperature, r.num_completions,
                                 r.top_k_per_token, r.echo_prompt], ensure_ascii=False).encode())
        else:
            whole = asdict(r)
            identity = {f.name: whole[f.name] for f in fields(r) if f.compare}
            h.update(json.dumps(identity, ensure_ascii=False, sort_keys=True).encode() + b"\n")
    return h.hexdigest()[:24]


def submission_fingerprint(submission) -> dict:
    """What --resume checks the submission against: the manifest's content, and the name, size
    and mtime_ns of every file in its base, adapter and tokenizer folders (cheap: no hashing of
    gigabytes; a moved or copied submission keeps it where the copy keeps modification times)."""
    files: dict[str, tuple[int, int]] = {}
    seen: set[Path] = set()
    for role, folder in (("base", submission.base_dir), ("adapter", submission.adapter_dir),
                         ("tokenizer", submission.tokenizer_dir)):
        if folder is None or folder in seen:  # the tokenizer is often the base folder
            continue
        seen.add(folder)
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                st = f.stat()
                files[f"{role}/{f.relative_to(folder).as_posix()}"] = (st.st_size, st.st_mtime_ns)
    manifest = hashlib.sha256(submission.manifest_path.read_bytes()).hexdigest()
    return {"manifest": manifest, "files": files}


def fingerprint_changes(old: dict, new: dict) -> list[str]:
    """What differs between two fingerprints, one item per file: "adapter/x.safetensors (size or time)"."""
    changes = ["effbench.toml (content)"] if old["manifest"] != new["manifest"] else []
    a, b = old["files"], new["files"]
    for name in sorted(set(a) | set(b)):
        if name not in b:
            changes.append(f"{name} (removed)")
        elif name not in a:
            changes.append(f"{name} (added)")
        elif tuple(a[name]) != tuple(b[name]):
            changes.append(f"{name} (size or time)")
    return changes


class Journal:
    """Append-only; one JSON line per result, one unbuffered write per batch. A write that fails
    (disk full) is cut back off the file, so the journal keeps only whole lines: every result
    journaled before stays, and nothing is left in a buffer for close() to fail on again.

    A new journal starts as its header line, put in place in one step (an earlier journal in the
    folder, --overwrite, stays whole until then). Appending to an existing one (--resume) first
    repairs its end: a torn last line is cut off, with a warning."""

    def __init__(self, path: Path, header: dict, append: bool = False):
        self.path = path
        try:
            if not append:
                record = {"kind": "header", "version": JOURNAL_VERSION, **header}
                write_text_atomic(path, json.dumps(record, ensure_ascii=False) + "\n")
            self._f = path.open("ab", buffering=0)
        except OSError as e:
            if (err := out_error(path.parent, e)) is None:
                raise
            raise err from e
        if append:
            self._repair_end()

    def _repair_end(self) -> None:
        """Appends must start on a fresh line: a last line that is not valid JSON (a kill
        mid-write; read_journal ignored it) is cut off, one that lacks only its newline (read
        counted it) gets it."""
        data = self.path.read_bytes()
        start = data.rfind(b"\n") + 1
        tail = data[start:]
        if not tail:
            return
        if is_torn(tail.decode("utf-8", errors="replace")):  # decoded as read_journal does
            warnings.warn(f"{self.path}: torn last journal line dropped ({len(tail)} bytes, not valid JSON);"
                          " its batch runs again")
            os.ftruncate(self._f.fileno(), start)
        else:
            self._write_bytes(b"\n")

    def _write(self, records: list[dict]) -> None:
        self._write_bytes("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8"))

    def _write_bytes(self, raw: bytes) -> None:
        data = memoryview(raw)
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
    not valid JSON (a kill mid-write, or a live run's batch half written) is ignored with a
    warning; invalid JSON anywhere else, or a line of the wrong shape anywhere, means the file
    was damaged otherwise: refused. Reading never writes: the file is left as it is (Journal
    cuts a torn line off when --resume appends)."""
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
            rec = parse_record(line)
        except BadRecord as e:
            if e.torn:
                if i == len(lines):
                    warnings.warn(f"{path}:{i}: torn last journal line ignored (not valid JSON: a kill mid-write);"
                                  " --resume drops it and runs its batch again")
                    break
                raise EffbenchError(f"{path}:{i}: corrupt journal line ({e})") from None
            raise EffbenchError(f"{path}:{i}: {e}") from None
        kind = rec["kind"]
        if (kind == "header") != (i == 1):
            raise EffbenchError(f"{path}:{i}: field 'kind': {kind!r} record; the header must be line 1 and only line 1")
        if kind == "header":
            if rec["version"] not in READS_VERSIONS:
                raise EffbenchError(f"{path}:{i}: field 'version': journal version {rec['version']}, this effbench reads"
                                    f" versions {', '.join(map(str, READS_VERSIONS))}; start a new --out instead of --resume")
            header = {k: v for k, v in rec.items() if k != "kind"}
        elif kind == "result":
            results.append(result_from_json(rec))
        else:
            events.append(dict(rec))
    if header is None:
        raise EffbenchError(f"{path}:1: journal has no header line")
    return header, results, events


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
    n = journaled_results(root / JOURNAL_NAME)
    if n:
        then = (f"the journal {out / JOURNAL_NAME} keeps the {n} results computed so far:"
                f" {todo} and run `effbench run --resume {out}`")
    else:
        then = f"{todo} and run again, or give another --out"
    return EffbenchError(f"{out}: {what} {target}; {then}")


def _nearly_full(folder: Path) -> bool:
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    return shutil.disk_usage(existing).free < 1 << 20


def journaled_results(path: Path) -> int:
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

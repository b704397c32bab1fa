"""The journal's lines (journal.py writes and reads the file): the shape of each record, checked
strictly when a line is read back, and a result's record to and from a GenerationResult.

A line that is not a record raises BadRecord: `torn` when it is not valid JSON at all (what a
kill mid-write leaves; read_journal then decides by where the line is), otherwise its message
names the field and what is wrong with it, e.g. "field 'completions.0.text': ..., got 3 (result
record)".
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated, Literal, Union

from pydantic import Field, TypeAdapter, ValidationError
from typing_extensions import NotRequired, TypedDict

from effbench.contracts import Completion, GenerationResult, Timings, TokenLogprob


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


class _FingerprintRecord(TypedDict):
    manifest: str  # sha256 of effbench.toml
    files: dict[str, tuple[int, int]]  # "adapter/adapter_model.safetensors" -> (size, mtime_ns)


class _HeaderRecord(TypedDict):
    kind: Literal["header"]
    version: int
    plan_digest: str
    fingerprint: NotRequired[_FingerprintRecord]  # absent in version 1
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


class BadRecord(ValueError):
    """A journal line that is not a record; `torn`: not valid JSON at all (a kill mid-write)."""

    def __init__(self, message: str, torn: bool):
        super().__init__(message)
        self.torn = torn


def parse_record(line: str | bytes) -> dict:
    """One journal line, checked against the records above (strict: no coercion), or BadRecord."""
    try:
        return _RECORD.validate_json(line, strict=True)
    except ValidationError as e:
        first = e.errors(include_url=False)[0]
        if first["type"] == "json_invalid":
            raise BadRecord(f"not valid JSON: {first['msg']}", torn=True) from None
        raise BadRecord(_shape_error(first), torn=False) from None


def is_torn(line: str | bytes) -> bool:
    """Whether a line is not valid JSON (what a kill mid-write leaves), by the same parser as read_journal."""
    try:
        _RECORD.validate_json(line, strict=True)
    except ValidationError as e:
        return e.errors(include_url=False)[0]["type"] == "json_invalid"
    return False


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


def result_to_json(r: GenerationResult) -> dict:
    return asdict(r)


def result_from_json(d: dict) -> GenerationResult:
    """A result from a record already checked against _ResultRecord (parse_record does)."""
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

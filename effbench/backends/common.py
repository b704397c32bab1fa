"""What every backend does the same way, so that they agree by construction: per-token texts,
HELM's stop-sequence rule, a completion assembled from token ids and logprobs, request checks."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from effbench.contracts import Completion, GenerationRequest, TokenLogprob

if TYPE_CHECKING:
    from effbench.submission import Submission


def token_texts(tokenizer, ids: Sequence[int]) -> list[str]:
    """Per-token texts whose concatenation is exactly decode(ids) (a multi-byte character split
    across tokens lands on the token that completes it)."""
    texts, prev = [], ""
    for i in range(len(ids)):
        cur = tokenizer.decode(list(ids[: i + 1]), skip_special_tokens=True)
        if cur.endswith("\ufffd") and i + 1 < len(ids):
            texts.append("")
            continue
        texts.append(cur[len(prev) :])
        prev = cur
    return texts


def cut_at_stop(tokens: list[TokenLogprob], text: str, stops: Sequence[str], reason: str):
    """HELM's rule: the text ends just before the earliest stop sequence; tokens past it go,
    and a token that straddles the cut keeps only its part before it."""
    hits = [text.find(s) for s in stops if s in text]
    if not hits:
        return tokens, text, reason
    cut = min(hits)
    kept, pos = [], 0
    for t in tokens:
        if pos >= cut:
            break
        if pos + len(t.text) > cut:
            t = TokenLogprob(t.text[: cut - pos], t.logprob, t.top_logprobs, t.token_id)
        kept.append(t)
        pos += len(t.text)
    return kept, text[:cut], "stop"


def completion(tokenizer, req: GenerationRequest, ids: Sequence[int], logprobs: Sequence[float],
               tops: Sequence[tuple[tuple[str, float], ...]], reason: str,
               prompt_tokens: Sequence[TokenLogprob] | None) -> Completion:
    """One completion as effbench returns it: HELM's stop cut applied, the prompt in front when echoed."""
    texts = token_texts(tokenizer, ids)
    tokens = [TokenLogprob(t, lp, top, i) for t, lp, top, i in zip(texts, logprobs, tops, ids)]
    text = "".join(texts)
    if req.stop_sequences:
        tokens, text, reason = cut_at_stop(tokens, text, req.stop_sequences, reason)
    if req.echo_prompt:
        tokens = list(prompt_tokens or ()) + tokens
        text = req.prompt + text
    return Completion(text, tuple(tokens), reason)


def plan_ids_apply(submission: "Submission", model_dir: Path | None) -> bool:
    """Whether the prompt token ids the plan sends (GenerationRequest.prompt_token_ids, made with
    the submission's tokenizer folder: effbench/plan.py prompt_tokens) are the ones a tokenizer
    loaded from `model_dir` makes: that folder is the tokenizer folder itself, or a merge, which
    holds copies of the tokenizer folder's files (effbench/merge.py). A base served unmerged next
    to a manifest `tokenizer` folder of its own is neither: the backend then encodes the prompts."""
    tok = submission.tokenizer_dir
    if tok is None or model_dir is None:
        return False
    model_dir = Path(model_dir)
    return model_dir == tok or (submission.adapter_dir is not None and model_dir != submission.base_dir)


def encode_prompts(tokenizer, batch: Sequence[GenerationRequest], plan_ids: bool) -> list[list[int]]:
    """Each prompt's token ids: the plan's where they apply (plan_ids_apply), else encoded here,
    special tokens included as the plan adds them."""
    return [list(r.prompt_token_ids) if plan_ids and r.prompt_token_ids is not None
            else tokenizer.encode(r.prompt, add_special_tokens=True) for r in batch]


def request_problem(req: GenerationRequest, prompt_len: int, max_sequence_length: int) -> str | None:
    """Why a request cannot run (reported as its error), or None."""
    if prompt_len + req.max_tokens > max_sequence_length:
        return f"prompt of {prompt_len} tokens + max_tokens {req.max_tokens} exceeds max_sequence_length {max_sequence_length}"
    if req.num_completions < 1 or req.max_tokens < 0:
        return f"invalid request: num_completions={req.num_completions}, max_tokens={req.max_tokens}"
    return None


def allocator_stats() -> dict:
    """The torch allocator's peaks in this process (the backend worker): only it can see them."""
    import torch

    if not torch.cuda.is_available():
        return {"source": "cpu"}
    return {"source": "torch.cuda", "max_allocated_bytes": int(torch.cuda.max_memory_allocated()),
            "max_reserved_bytes": int(torch.cuda.max_memory_reserved())}

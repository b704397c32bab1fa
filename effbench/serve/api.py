"""The bodies of the challenge's HTTP API (POST /process, /tokenize, /decode), as pydantic models:
what a client may send and what it gets back. README, "The challenge's HTTP API, both ways".

Field mapping of POST /process (both the sample servers' names and what HELM sends):
  prompt -> prompt;  num_samples | num_return_sequences (1) -> num_completions;
  max_new_tokens (50) -> max_tokens;  temperature (0.8; HELM sends 1e-7 for greedy) -> temperature;
  top_p (1.0) -> top_p;  seed -> seed;  echo_prompt (false) -> echo_prompt;
  top_k_per_token (1) -> top_k_per_token;  stop_sequences ([]) -> stop_sequences (the backend
  cuts the text just before the first one, as HELM expects of the server);
  top_k (the sample servers' sampling top-k): accepted and IGNORED, GenerationRequest has no
  sampling top-k. Unknown fields are ignored, as the sample servers' pydantic models did.
The response describes the first completion only (HELM reads one): text, tokens [{text, logprob,
top_logprob}], logprob (sum over the returned tokens, prompt tokens included when echoed) and
request_time (seconds from the request's arrival to its answer, queueing included).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from effbench.contracts import GenerationRequest

MAX_COMPLETIONS = 64  # per request; each completion is a batch row


class ProcessRequest(BaseModel):
    """POST /process: the sample servers' fields and HELM HTTPModelClient's, in one model."""

    model_config = ConfigDict(extra="ignore")

    prompt: str
    num_samples: int | None = Field(None, ge=1, le=MAX_COMPLETIONS, description="Sample servers' name for num_return_sequences.")
    num_return_sequences: int | None = Field(None, ge=1, le=MAX_COMPLETIONS, description="HELM's name; default 1.")
    max_new_tokens: int = Field(50, ge=0)
    top_k: int | None = Field(None, description="Sampling top-k of the sample servers: accepted, ignored.")
    temperature: float = Field(0.8, ge=0, allow_inf_nan=False, description="<= 1e-4 is greedy (HELM sends 1e-7).")
    top_p: float = Field(1.0, gt=0, le=1, allow_inf_nan=False)
    seed: int | None = Field(None, ge=0, le=2**32 - 1)
    echo_prompt: bool | None = None
    top_k_per_token: int = Field(1, ge=1)
    stop_sequences: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_count(self) -> ProcessRequest:
        a, b = self.num_samples, self.num_return_sequences
        if a is not None and b is not None and a != b:
            raise ValueError(f"num_samples={a} and num_return_sequences={b} disagree; give one of them")
        return self

    def to_generation_request(self, request_id: str) -> GenerationRequest:
        return GenerationRequest(
            id=request_id,
            prompt=self.prompt,
            max_tokens=self.max_new_tokens,
            stop_sequences=tuple(s for s in self.stop_sequences if s),  # an empty stop string means nothing
            temperature=self.temperature,
            top_p=self.top_p,
            num_completions=self.num_return_sequences or self.num_samples or 1,
            top_k_per_token=self.top_k_per_token,
            echo_prompt=bool(self.echo_prompt),
            seed=self.seed,
        )


class TokenOut(BaseModel):
    text: str
    logprob: float
    top_logprob: dict[str, float]


class ProcessResponse(BaseModel):
    text: str
    tokens: list[TokenOut]
    logprob: float
    request_time: float


class TokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    text: str
    truncation: bool = True
    max_length: int = Field(2048, ge=1)


class TokenizeResponse(BaseModel):
    tokens: list[int]
    request_time: float


class DecodeRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    tokens: list[int] = Field(..., description="Token ids, each in [0, the tokenizer's size).")


class DecodeResponse(BaseModel):
    text: str
    request_time: float

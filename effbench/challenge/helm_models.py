"""The model names HELM sees for effbench: HELM builds run specs and tokenizes only for a
registered model deployment, so effbench registers one per submission (its tokenizer, its window),
a placeholder for checks that need no model, and writes prod_env files for a served model.
README, "How it works" and "The challenge's HTTP API, both ways".

A registered effbench model's client (NotExecutedByHelmClient) refuses every request: effbench's
scheduler fills every result itself, so HELM never sends one.
"""

from __future__ import annotations

from pathlib import Path

from helm.benchmark.model_deployment_registry import ClientSpec, ModelDeployment, register_model_deployment
from helm.benchmark.model_metadata_registry import get_unknown_model_metadata, register_model_metadata
from helm.benchmark.tokenizer_config_registry import TokenizerConfig, TokenizerSpec, register_tokenizer_config
from helm.clients.client import Client
from helm.common.request import Request, RequestResult

from effbench.atomic import write_text_atomic

_registered: set[str] = set()


class NotExecutedByHelmClient(Client):
    """The client HELM sees for an effbench model. effbench's scheduler fills every result itself;
    if HELM ever tried to send a request through a client, that would bypass the scheduler and
    its budget, so this fails loudly instead of answering."""

    def __init__(self, **_: object):
        pass

    def make_request(self, request: Request) -> RequestResult:
        raise RuntimeError("effbench models are executed by effbench's scheduler, not by a HELM client")


def register_model(helm_name: str, tokenizer_dir: Path | None, max_sequence_length: int, endpoint: str | None = None,
                   *, trust_remote_code: bool) -> None:
    """Register deployment, tokenizer and metadata for `helm_name` (idempotent per process).
    A local tokenizer folder is read by HELM's HuggingFaceTokenizer; a remote server (backend
    http) tokenizes through its own /tokenize and /decode with HELM's HTTPModelTokenizer.
    `trust_remote_code` (the command line's flag) is passed to every tokenizer load explicitly:
    left unset, transformers asks on a terminal whether to run a folder's code."""
    if helm_name in _registered:
        return
    if tokenizer_dir is not None:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True, trust_remote_code=trust_remote_code)
        # HELM fits prompts with token counts that leave out the special tokens the tokenizer adds
        # (BOS); the model sees them, so HELM's window is the model's minus those.
        n_special = len(tok.encode("", add_special_tokens=True))
        spec = TokenizerSpec(class_name="helm.tokenizers.huggingface_tokenizer.HuggingFaceTokenizer",
                             args={"pretrained_model_name_or_path": str(tokenizer_dir), "trust_remote_code": trust_remote_code})
        eot, prefix = tok.eos_token or "", tok.bos_token or ""
    else:
        n_special, eot, prefix = 0, "", ""
        spec = TokenizerSpec(class_name="helm.tokenizers.http_model_tokenizer.HTTPModelTokenizer", args={"base_url": endpoint})
    register_model_metadata(get_unknown_model_metadata(helm_name))
    register_tokenizer_config(TokenizerConfig(name=helm_name, tokenizer_spec=spec, end_of_text_token=eot, prefix_token=prefix))
    register_model_deployment(
        ModelDeployment(
            name=helm_name,
            client_spec=ClientSpec(class_name=f"{__name__}.NotExecutedByHelmClient", args={}),
            model_name=helm_name,
            tokenizer_name=helm_name,
            max_sequence_length=max_sequence_length - n_special,
        )
    )
    _registered.add(helm_name)


def helm_model_name(submission_name: str) -> str:
    return f"effbench/{submission_name}"


# HELM builds RunSpecs only for a model; checks that need the eval items but no model
# (`effbench contamination`) name this placeholder, whose client refuses every request.
PLACEHOLDER_MODEL = "effbench/no-model"


def register_placeholder_model() -> str:
    """Register PLACEHOLDER_MODEL (metadata and a deployment, once per process); returns its name."""
    if PLACEHOLDER_MODEL not in _registered:
        register_model_metadata(get_unknown_model_metadata(PLACEHOLDER_MODEL))
        register_model_deployment(
            ModelDeployment(
                name=PLACEHOLDER_MODEL,
                client_spec=ClientSpec(class_name=f"{__name__}.NotExecutedByHelmClient", args={}),
                model_name=PLACEHOLDER_MODEL,
            )
        )
        _registered.add(PLACEHOLDER_MODEL)
    return PLACEHOLDER_MODEL


SERVED_MODEL = "effbench/served"


def write_http_prod_env(env_dir: Path, url: str, max_sequence_length: int = 2047) -> str:
    """A prod_env folder (helm-run --local-path) that points HELM's own HTTPModelClient and
    HTTPModelTokenizer at a server speaking the challenge's API, the way participants ran the
    unmodified helm-run against their containers. Returns the model name for run entries."""
    import datetime

    import yaml  # PyYAML: a HELM dependency

    env_dir.mkdir(parents=True, exist_ok=True)
    client = {"class_name": "helm.clients.http_model_client.HTTPModelClient", "args": {"base_url": url}}
    tokenizer = {"class_name": "helm.tokenizers.http_model_tokenizer.HTTPModelTokenizer", "args": {"base_url": url}}
    files = {
        "model_deployments.yaml": {"model_deployments": [{
            "name": SERVED_MODEL, "model_name": SERVED_MODEL, "tokenizer_name": SERVED_MODEL,
            "max_sequence_length": max_sequence_length, "client_spec": client}]},
        "tokenizer_configs.yaml": {"tokenizer_configs": [{
            "name": SERVED_MODEL, "tokenizer_spec": tokenizer, "end_of_text_token": "</s>", "prefix_token": "<s>"}]},
        "model_metadata.yaml": {"models": [{
            "name": SERVED_MODEL, "display_name": "effbench served", "description": "effbench serve",
            "creator_organization_name": "effbench", "access": "open", "release_date": datetime.date.today(),
            "tags": ["TEXT_MODEL_TAG", "FULL_FUNCTIONALITY_TEXT_MODEL_TAG"]}]},
    }
    for name, content in files.items():
        write_text_atomic(env_dir / name, yaml.safe_dump(content, sort_keys=False))
    return SERVED_MODEL

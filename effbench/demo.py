"""Build a demo submission offline and deterministically, in seconds.

A byte-level BPE tokenizer trained on a built-in corpus, a small random Llama (head_dim 64 so
vLLM's CPU attention accepts it) and a LoRA adapter with non-zero weights, laid out as a valid
submission folder. Same arguments, same bytes (on one machine, where the adapter is trained).

`train_steps` > 0 trains the adapter briefly on synthetic Dyck-2 completions written like HELM's
dyck_language prompts (sequences drawn here, not HELM's instances): the default suite's dyck run
then scores above the random base, so the demo's numbers show a fine-tune doing something.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Iterable

from effbench.contracts import EffbenchError

SPECIALS = ["<unk>", "<s>", "</s>", "<pad>"]
_WORDS = (
    "the a an of to in and or is was are be not no yes true false answer question because so if then "
    "when which who what why how many more less most least all some none each every number one two "
    "three four five six seven eight nine ten first second third last before after above below left "
    "right up down model data test train score time budget minute second token prompt output input "
    "run suite scenario metric exact match choice correct wrong ( ) [ ] { } + - * / = < > : ; , . ? !"
).split()


def _corpus(n_lines: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    zen = (
        "Beautiful is better than ugly. Explicit is better than implicit. Simple is better than complex. "
        "Errors should never pass silently. In the face of ambiguity, refuse the temptation to guess."
    )
    lines = [zen]
    for _ in range(n_lines):
        k = rng.randint(4, 16)
        words = [rng.choice(_WORDS) for _ in range(k)]
        if rng.random() < 0.3:
            words.append(str(rng.randint(0, 9999)))
        lines.append(" ".join(words) + rng.choice([".", "?", "\n", "\n\n", ""]))
    return lines


def build_tokenizer(out: Path, vocab_size: int = 1024, seed: int = 0, model_max_length: int = 2048,
                    corpus: Iterable[str] | None = None):
    """A byte-level BPE trained on `corpus` (lines of text), or on the built-in word salad, whose
    ~100 words give few merges: English then tokenizes almost byte by byte. Train on real text
    for a realistic vocabulary (e.g. 16k merges: MMLU prompts of ~450 tokens, as real tokenizers)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(4000, seed) if corpus is None else corpus, trainer=trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        model_max_length=model_max_length,
        padding_side="left",
    )
    fast.save_pretrained(out)
    # transformers writes model_max_length as given, but make sure it is a real number (HELM refuses 1e30).
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["model_max_length"] = model_max_length
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    return fast


def name_for(folder: str | Path) -> str:
    """A submission name from a folder's name (`effbench demo my-sub` builds "my-sub"): what the
    manifest's name allows, else "demo"."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(folder).resolve().name).strip("-._")[:100]
    return name if re.match(r"^[A-Za-z0-9]", name) else "demo"


def build_demo(
    out: str | Path,
    *,
    hidden_size: int = 128,
    num_layers: int = 2,
    num_heads: int = 2,
    intermediate_size: int = 384,  # a multiple of 64: bitsandbytes 4-bit on the CPU needs it
    vocab_size: int = 1024,
    model_vocab_size: int | None = None,
    lora_rank: int = 8,
    with_adapter: bool = True,
    seed: int = 0,
    name: str = "demo",
    max_batch_size: int = 8,
    dtype: str = "float32",
    corpus: Iterable[str] | None = None,
    train_steps: int = 0,
) -> Path:
    """Write a submission folder at `out` (must be empty or absent); returns its path.
    The defaults give ~0.6M parameters; hidden_size=768, num_layers=12, intermediate_size=2048,
    model_vocab_size=8192 give the ~100M-parameter Llama of the benchmarks; `corpus` trains the
    tokenizer on real text (build_tokenizer)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise EffbenchError(f"{out}: folder exists and is not empty; choose a new folder for the demo submission")
    base = out / "base"
    base.mkdir(parents=True, exist_ok=True)

    tokenizer = build_tokenizer(base, vocab_size=vocab_size, seed=seed, corpus=corpus)
    config = LlamaConfig(
        vocab_size=max(len(tokenizer), model_vocab_size or 0),  # real models pad their vocab too
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        head_dim=hidden_size // num_heads,
        max_position_embeddings=2048,
        initializer_range=0.2,  # large on purpose: peaked logits, few near-ties in greedy decoding
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        torch_dtype=dtype,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    model.save_pretrained(base, safe_serialization=True)

    manifest = [f'name = "{name}"', 'base = "base"']
    if with_adapter:
        from peft import LoraConfig, get_peft_model

        torch.manual_seed(seed + 1)
        lora = LoraConfig(
            r=lora_rank,
            lora_alpha=2 * lora_rank,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
            lora_dropout=0.0,
            init_lora_weights=False,  # random A and B: the adapter really changes the outputs
            task_type="CAUSAL_LM",
        )
        peft_model = get_peft_model(model, lora)
        trained = train_on_dyck(peft_model, tokenizer, train_steps, seed) if train_steps > 0 else None
        peft_model.peft_config["default"].base_model_name_or_path = "effbench-demo-base"  # report/summary.py reads it
        # save_embedding_layers=False: no look-up of the base on the hub (we are offline).
        peft_model.save_pretrained(out / "adapter", safe_serialization=True, save_embedding_layers=False)
        cfg_path = out / "adapter" / "adapter_config.json"  # target_modules is saved from a set: sort it
        cfg = json.loads(cfg_path.read_text())
        cfg["target_modules"] = sorted(cfg["target_modules"])
        cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
        if trained is not None:  # report/summary.py says what the demo's scores mean
            (out / "adapter" / TRAINING_NOTE).write_text(json.dumps(trained, indent=2, sort_keys=True) + "\n")
        manifest.append('adapter = "adapter"')
    manifest += [
        'backend = "hf"',
        f'dtype = "{dtype}"',
        'quantization = "none"',
        "",
        "[limits]",
        f"max_batch_size = {max_batch_size}",
        "max_sequence_length = 2048",
    ]
    (out / "effbench.toml").write_text("\n".join(manifest) + "\n")
    return out


TRAINING_NOTE = "effbench_demo_training.json"
DYCK_INSTRUCTIONS = "Please complete the rest of the following Dyck sequences, making sure that the parentheses are closed properly."
_PAIRS = (("(", ")"), ("[", "]"))


def dyck_example(rng: random.Random, min_len: int, max_len: int) -> tuple[str, str]:
    """A Dyck-2 prefix of min_len-max_len brackets that leaves 1-3 open, and the closings that end
    it (space-separated, as HELM writes them)."""
    k = rng.randint(1, 3)
    n = rng.randint(max(min_len, k), max_len)
    n += (n - k) % 2  # an even number of brackets besides the k left open
    seq: list[str] = []
    stack: list[str] = []
    for i in range(n):
        left = n - i
        close = len(stack) - k == left or (stack and k - len(stack) < left and rng.random() < 0.5)
        if close:
            seq.append(stack.pop())
        else:
            o, c = rng.choice(_PAIRS)
            seq.append(o)
            stack.append(c)
    return " ".join(seq), " ".join(reversed(stack))


def dyck_prompt(rng: random.Random, shots: int = 3) -> tuple[str, str]:
    """(prompt, answer) in the layout of HELM's dyck_language run: instructions, `shots` solved
    short sequences, then a long one to close."""
    lines = [DYCK_INSTRUCTIONS, ""]
    for _ in range(shots):
        x, y = dyck_example(rng, 4, 50)
        lines.append(f"Input: {x} {y}")
    x, y = dyck_example(rng, 52, 100)
    lines.append(f"Input: {x}")
    return "\n".join(lines), f" {y}\n"


def train_on_dyck(model, tokenizer, steps: int, seed: int, batch: int = 8, lr: float = 3e-3) -> dict:
    """A few AdamW steps on the adapter's weights only, the loss on the answer's tokens (the
    closing brackets and the newline HELM stops at). Returns what was done, for the summary."""
    import torch

    rng = random.Random(seed + 2)
    torch.manual_seed(seed + 2)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    model.train()
    loss = None
    for _ in range(steps):
        pairs = [dyck_prompt(rng) for _ in range(batch)]
        ids, labels = [], []
        for prompt, answer in pairs:
            p = tokenizer(prompt)["input_ids"]
            a = tokenizer(answer, add_special_tokens=False)["input_ids"]
            ids.append(p + a)
            labels.append([-100] * len(p) + a)
        width = max(map(len, ids))
        pad = tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in ids])  # left padding, as the backend's
        mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids])
        target = torch.tensor([[-100] * (width - len(x)) + x for x in labels])
        loss = model(input_ids=input_ids, attention_mask=mask, labels=target).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    return {"task": "synthetic Dyck-2 completions (HELM dyck_language's layout)", "steps": steps, "batch": batch,
            "final_loss": round(loss.item(), 4) if loss is not None else None}  # no time: same arguments, same bytes

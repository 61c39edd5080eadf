"""A pretrained causal LM fine-tuned to write a problem's program as equations.

The base's lower layers stay frozen: their states over every training sequence are
computed once and cached (``cache/``). Only the top layers, the final norm and a head
restricted to the equation grammar's characters (initialized from the base's own
embedding rows) are trained over those states, so an epoch costs a fraction of a full
fine-tune. Training checkpoints every ``save_every`` steps and resumes from there.

    python -m mycelium.train.program_writer cache --base DIR --data DATA --out RUN
    python -m mycelium.train.program_writer fit --out RUN [--epochs N] [--resume]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from mycelium.executor import execute
from mycelium.executor.numbers import parse_number
from mycelium.executor.program import Step
from mycelium.runtime.equations import char_ids
from mycelium.runtime.grammar import parse_arg
from mycelium.runtime.spec import DEFAULT_CONSTANTS

from .equations import ALPHABET, OPERATORS, Equations, write_equations

PROMPT = "{question}\nEquations:\n"
IGNORE = -100


@dataclass
class WriterConfig:
    """What a trained writer needs besides the base checkpoint."""

    base: str  # the base checkpoint folder
    frozen_layers: int  # layers below this are frozen (their states cached)
    alphabet: str = ALPHABET  # the head's classes, then the end of the program
    prompt: str = PROMPT
    lr: float = 1e-4
    batch: int = 16
    epochs: int = 2
    warmup: int = 50
    save_every: int = 100
    seed: int = 0


def read_examples(problems: Path, split: str) -> list[dict]:
    """Aligned problems of a `mycelium-train data` problems.jsonl whose programs use only
    the four operations, with their equations (values resolved by the executor)."""
    constants = tuple(parse_number(text) for text in DEFAULT_CONSTANTS)
    rows = []
    for line in problems.open(encoding="utf-8"):
        record = json.loads(line)
        program = record.get("program") or []
        if (record["split"] != split or not record["aligned"] or not program
                or any(step["op"] not in OPERATORS for step in program)):
            continue
        quantities = [parse_number(span["value"]) for span in record["spans"]]
        steps = tuple(Step(s["op"], tuple(parse_arg(a) for a in s["args"])) for s in program)
        run = execute(steps, quantities, constants=constants)
        if not run.ok:
            continue
        written = [(t.op, [value for _, value in t.args]) for t in run.steps]
        equations = write_equations(written, [t.result for t in run.steps])
        rows.append({"id": record["id"], "question": record["question"],
                     "equations": equations, "answer": record.get("answer")})
    return rows


def encode(tokenizer, prompt: str, equations: Equations, ids: list[int], eos: int
           ) -> tuple[list[int], list[int]]:
    """Token ids of prompt + equations + end, and per position the head class of the next
    token (IGNORE in the prompt and where the executor writes)."""
    prompt_ids = tokenizer.encode(prompt, add_special_tokens=False).ids
    classes = [ALPHABET.index(c) for c in equations.text] + [len(ALPHABET)]
    chosen = [not f for f in equations.forced] + [True]
    tokens = prompt_ids + [ids[c] if c < len(ALPHABET) else eos for c in classes]
    labels = [IGNORE] * len(tokens)
    for at, (cls, keep) in enumerate(zip(classes, chosen, strict=True)):
        if keep:
            labels[len(prompt_ids) + at - 1] = cls
    return tokens, labels


class TopLayers(nn.Module):
    """The trained part: the base's layers from ``frozen`` up, its norm and a grammar head."""

    def __init__(self, model, frozen: int, head_ids: list[int]):
        super().__init__()
        inner = model.model
        self.layers = nn.ModuleList(inner.layers[frozen:])
        self.norm = inner.norm
        self.rotary = inner.rotary_emb
        self.head = nn.Parameter(model.get_output_embeddings().weight[head_ids].detach().clone())

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        """Head logits (B, T, classes) from the frozen layers' states (B, T, H); causal, so
        right padding never changes a real position."""
        positions = torch.arange(states.shape[1], device=states.device)[None]
        rope = self.rotary(states, positions)
        for layer in self.layers:
            states = layer(states, position_ids=positions, position_embeddings=rope)
            states = states[0] if isinstance(states, tuple) else states
        return self.norm(states) @ self.head.T


def load_base(folder: Path):
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="sdpa").eval()
    return model, Tokenizer.from_file(str(folder / "tokenizer.json")), model.config


@torch.no_grad()
def build_cache(base: Path, problems: Path, out: Path, frozen: int, shard: int = 256) -> None:
    """Write ``out/cache/NNN.pt``: per train example its tokens, labels and the frozen
    layers' bf16 states; shards already written are kept (resumable)."""
    model, tokenizer, config = load_base(base)
    ids = char_ids(tokenizer)
    eos = int(config.eos_token_id)
    rows = read_examples(problems, "train")
    (out / "cache").mkdir(parents=True, exist_ok=True)
    config_path = out / "writer.json"
    if not config_path.exists():
        config_path.write_text(json.dumps(asdict(WriterConfig(str(base), frozen)), indent=2))
    inner = model.model
    for number, start in enumerate(range(0, len(rows), shard)):
        path = out / "cache" / f"{number:03d}.pt"
        if path.exists():
            continue
        items = []
        for row in rows[start:start + shard]:
            tokens, labels = encode(tokenizer, PROMPT.format(question=row["question"]),
                                    row["equations"], ids, eos)
            items.append({"id": row["id"], "tokens": tokens, "labels": labels})
        order = sorted(range(len(items)), key=lambda i: len(items[i]["tokens"]))
        for at in range(0, len(order), 16):
            chunk = [items[i] for i in order[at:at + 16]]
            width = max(len(c["tokens"]) for c in chunk)
            batch = torch.tensor([c["tokens"] + [eos] * (width - len(c["tokens"]))
                                  for c in chunk])
            with torch.autocast("cpu", dtype=torch.bfloat16):
                states = inner.embed_tokens(batch)
                positions = torch.arange(width)[None]
                rope = inner.rotary_emb(states, positions)
                for layer in inner.layers[:frozen]:
                    states = layer(states, position_ids=positions, position_embeddings=rope)
                    states = states[0] if isinstance(states, tuple) else states
            for row, c in zip(states, chunk, strict=True):
                c["states"] = row[: len(c["tokens"])].to(torch.bfloat16).clone()
        torch.save(items, path)
        print(f"cached {path.name}: {start + len(items)} of {len(rows)}", flush=True)


def _batches(items: list[dict], size: int, seed: int) -> list[list[int]]:
    """Length-bucketed batches in a seeded random order."""
    rng = random.Random(seed)
    order = sorted(range(len(items)), key=lambda i: (len(items[i]["tokens"]), rng.random()))
    batches = [order[i:i + size] for i in range(0, len(order), size)]
    rng.shuffle(batches)
    return batches


def fit(out: Path, epochs: int | None = None, resume: bool = False, threads: int = 2,
        minutes: float = 0.0, stop_after: int = 0) -> bool:
    """Train the top layers over the cache; checkpoints ``out/state.pt`` every
    ``save_every`` steps and writes ``out/writer.pt`` (the trained part) at the end. With
    ``minutes`` (or ``stop_after`` steps) it checkpoints and stops early, to be resumed;
    returns whether training finished."""
    torch.set_num_threads(threads)
    config = WriterConfig(**json.loads((out / "writer.json").read_text()))
    if epochs:
        config.epochs = epochs
    items = [item for path in sorted((out / "cache").glob("*.pt"))
             for item in torch.load(path, weights_only=False)]
    model, tokenizer, _ = load_base(Path(config.base))
    top = TopLayers(model, config.frozen_layers, [*char_ids(tokenizer), model.config.eos_token_id])
    del model
    top.train()
    optimizer = torch.optim.AdamW(top.parameters(), lr=config.lr, weight_decay=0.0)
    per_epoch = math.ceil(len(items) / config.batch)
    total = per_epoch * config.epochs
    step = 0
    state_path = out / "state.pt"
    if resume and state_path.exists():
        state = torch.load(state_path, weights_only=False)
        top.load_state_dict(state["top"])
        optimizer.load_state_dict(state["optimizer"])
        step = state["step"]
        print(f"resumed at step {step} of {total}", flush=True)
    schedule = lambda s: min(1.0, (s + 1) / config.warmup) * max(0.0, 1 - s / total)  # noqa: E731
    started, seen, loss_sum = time.time(), 0, 0.0
    while step < total:
        epoch, offset = divmod(step, per_epoch)
        batch_ids = _batches(items, config.batch, config.seed + epoch)[offset]
        chunk = [items[i] for i in batch_ids]
        width = max(len(c["tokens"]) for c in chunk)
        states = torch.zeros(len(chunk), width, chunk[0]["states"].shape[-1],
                             dtype=torch.bfloat16)
        labels = torch.full((len(chunk), width), IGNORE)
        for row, c in enumerate(chunk):
            states[row, : len(c["tokens"])] = c["states"]
            labels[row, : len(c["labels"])] = torch.tensor(c["labels"])
        for group in optimizer.param_groups:
            group["lr"] = config.lr * schedule(step)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = top(states)
        loss = nn.functional.cross_entropy(logits.float().flatten(0, 1), labels.flatten(),
                                           ignore_index=IGNORE)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(top.parameters(), 1.0)
        optimizer.step()
        step += 1
        seen += int((labels != IGNORE).sum())
        loss_sum += float(loss.detach())
        if step % 20 == 0:
            print(f"step {step}/{total} epoch {epoch} loss {loss_sum / 20:.4f} "
                  f"{seen / (time.time() - started):.0f} target chars/s", flush=True)
            loss_sum = 0.0
        out_of_time = (minutes and time.time() - started > 60 * minutes) or (
            stop_after and step >= stop_after)
        if step % config.save_every == 0 or step == total or out_of_time:
            torch.save({"top": top.state_dict(), "optimizer": optimizer.state_dict(),
                        "step": step}, state_path.with_suffix(".tmp"))
            state_path.with_suffix(".tmp").replace(state_path)
        if out_of_time and step < total:
            print(f"stopped at step {step} of {total}; continue with --resume", flush=True)
            return False
    trained = {k: v for k, v in top.state_dict().items() if not k.startswith("rotary")}
    torch.save(trained, out / "writer.pt")
    print(f"wrote {out / 'writer.pt'}", flush=True)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    cache = sub.add_parser("cache")
    cache.add_argument("--base", type=Path, required=True)
    cache.add_argument("--data", type=Path, required=True, help="a `mycelium-train data` folder")
    cache.add_argument("--out", type=Path, required=True)
    cache.add_argument("--frozen-layers", type=int, default=16)
    cache.add_argument("--threads", type=int, default=2)
    train = sub.add_parser("fit")
    train.add_argument("--out", type=Path, required=True)
    train.add_argument("--epochs", type=int, default=None)
    train.add_argument("--resume", action="store_true")
    train.add_argument("--threads", type=int, default=2)
    train.add_argument("--minutes", type=float, default=0.0,
                       help="checkpoint and stop after this long (0: run to the end)")
    args = parser.parse_args()
    if args.command == "cache":
        torch.set_num_threads(args.threads)
        build_cache(args.base, args.data / "problems.jsonl", args.out, args.frozen_layers)
    else:
        fit(args.out, args.epochs, args.resume, args.threads, args.minutes)


if __name__ == "__main__":
    main()

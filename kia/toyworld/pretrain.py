"""Write the toy world to disk and pretrain its tiny Llama on the CPU.

    kia toyworld build -o datasets/toyworld --seed 0

The corpus is shaped like the probe's prompts: documents that open with the system line and string
five "Question: … / Answer: …" pairs together. A model trained on one-fact sequences answers its
facts alone but loses them under a few-shot context; trained on prompt-shaped documents it keeps
them (measured before this module was written, see the README).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kia.artifacts import write_json, write_jsonl, write_manifest, write_text
from kia.toyworld.world import REFUSAL, RELATIONS, SYSTEM_PROMPT, World, WorldConfig, generate_world

CHAT_TEMPLATE = "{{ bos_token }}{% for message in messages %}{{ message['content'] }}\n{% endfor %}"


@dataclass(frozen=True)
class PretrainConfig:
    seed: int = 0
    epochs: int = 30
    hidden_size: int = 256
    layers: int = 4
    heads: int = 4
    intermediate_size: int = 704
    vocab_size: int = 4096
    batch_size: int = 32
    lr: float = 1.5e-3
    warmup_steps: int = 200
    docs_per_item: int = 5
    threads: int = 0  # 0: torch's default
    bf16: bool = True  # autocast on the CPU
    save_epochs: tuple[int, ...] = ()  # extra snapshots, e.g. (20, 30), for choosing the epoch count


def corpus_items(world: World, rng: random.Random) -> list[tuple[str, str, str]]:
    """Every (stream, question, answer) the corpus shows, each fact exactly `exposure` times."""
    items: list[tuple[str, str, str]] = []
    templates = {r.name: r.templates for r in RELATIONS}
    for fact in world.facts:
        forms = [t.format(s=fact["subject"]) for t in templates[fact["relation"]]]
        if fact["obscure"]:
            for _ in range(world.config.refusal_exposure):
                items.append((fact["relation"], rng.choice(forms), REFUSAL))
        for _ in range(fact["exposure"]):
            items.append((fact["relation"], rng.choice(forms), fact["object"]))
        for wrong in fact.get("conflicting", ()):
            items.append((fact["relation"], rng.choice(forms), wrong))
    items += [("mc", it["question"], it["answer"]) for it in world.mc_train]
    items += [("arith", it["question"], it["answer"]) for it in world.arith_train]
    return items


def make_documents(items: list[tuple[str, str, str]], rng: random.Random, per_doc: int) -> list[str]:
    """Chunk the items into prompt-shaped documents, reshuffled each epoch.

    Half of the items go to documents of their own relation (like the probe's same-relation
    exemplars), half to mixed documents, so either kind of few-shot context works.
    """
    streams: dict[str, list[tuple[str, str]]] = {}
    for stream, q, a in items:
        key = stream if rng.random() < 0.5 else "mixed"
        streams.setdefault(key, []).append((q, a))
    docs = []
    for pairs in streams.values():
        rng.shuffle(pairs)
        for i in range(0, len(pairs), per_doc):
            body = "".join(f"Question: {q}\nAnswer: {a}\n" for q, a in pairs[i : i + per_doc])
            docs.append(f"{SYSTEM_PROMPT}\n{body}")
    rng.shuffle(docs)
    return docs


def train_tokenizer(texts: list[str], vocab_size: int) -> Any:
    """A byte-level BPE with single-digit numbers, wrapped as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    special = ["<s>", "</s>", "<pad>", "<unk>"]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(texts, trainer=trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.padding_side = "left"
    return fast


def write_world(world: World, out: Path) -> dict[str, Path]:
    """The world's data files: facts, the two skills' train/test items, and lm-eval task YAMLs."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "facts": write_jsonl(out / "facts.jsonl", world.facts),
        "mc_test": write_jsonl(out / "tasks" / "toy_mc.jsonl", world.mc_test),
        "arith_test": write_jsonl(out / "tasks" / "toy_arith.jsonl", world.arith_test),
    }
    for name, title in (("toy_mc", "which of these is a <kind>"), ("toy_arith", "small-number addition")):
        write_text(
            out / "tasks" / f"{name}.yaml",
            f"# toy world benchmark: {title} (held-out items, never in the pretraining corpus)\n"
            f"task: {name}\n"
            "dataset_path: json\n"
            f"dataset_kwargs:\n  data_files:\n    test: {name}.jsonl\n"
            "test_split: test\n"
            "output_type: multiple_choice\n"
            'doc_to_text: "Question: {{question}}\\nAnswer:"\n'
            "doc_to_choice: choices\n"
            "doc_to_target: gold\n"
            "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
            "metadata:\n  version: 1.0\n",
        )
    return paths


def _lr_lambda(total: int, warmup: int) -> Callable[[int], float]:
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return f


def pretrain(world: World, out: Path, config: PretrainConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train the toy Llama from scratch on the world's corpus and `save_pretrained` it to `out/model`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    items = corpus_items(world, rng)
    tokenizer = train_tokenizer(
        make_documents(items, random.Random(config.seed), config.docs_per_item), config.vocab_size
    )
    model_cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.layers,
        num_attention_heads=config.heads,
        num_key_value_heads=config.heads,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(model_cfg)
    n_params = sum(p.numel() for p in model.parameters())
    docs_per_epoch = len(make_documents(items, random.Random(0), config.docs_per_item))
    steps_per_epoch = math.ceil(docs_per_epoch / config.batch_size)
    total = steps_per_epoch * config.epochs
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.01, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(total, config.warmup_steps))
    log(f"toy model: {n_params / 1e6:.2f} M parameters, {len(items)} items, {docs_per_epoch} docs/epoch, {total} steps")
    history = []
    start = time.time()
    model.train()
    for epoch in range(1, config.epochs + 1):
        docs = make_documents(items, rng, config.docs_per_item)
        # Length-sorted buckets waste little on padding; the bucket order is shuffled.
        order = sorted(range(len(docs)), key=lambda i: len(docs[i]))
        batches = [order[i : i + config.batch_size] for i in range(0, len(order), config.batch_size)]
        rng.shuffle(batches)
        total_loss, n_tok = 0.0, 0
        for batch in batches:
            enc = tokenizer([docs[i] for i in batch], return_tensors="pt", padding=True, padding_side="right")
            labels = enc.input_ids.masked_fill(enc.attention_mask == 0, -100)
            # bf16 autocast halves the step time on CPUs with avx512_bf16; weights stay fp32.
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.bf16):
                outputs = model(input_ids=enc.input_ids, attention_mask=enc.attention_mask, labels=labels)
            outputs.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            ntok = int(enc.attention_mask.sum())
            total_loss += outputs.loss.item() * ntok
            n_tok += ntok
        history.append({"epoch": epoch, "loss": total_loss / n_tok, "seconds": round(time.time() - start, 1)})
        log(f"epoch {epoch}/{config.epochs}: loss {total_loss / n_tok:.4f} ({time.time() - start:.0f} s)")
        if epoch in config.save_epochs and epoch != config.epochs:
            _save(model, tokenizer, out / f"model-epoch{epoch}")
    model.eval()
    _save(model, tokenizer, out / "model")
    return {"parameters": n_params, "history": history, "seconds": round(time.time() - start, 1)}


def _save(model: Any, tokenizer: Any, path: Path) -> None:
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)


def build_toyworld(
    out: str | Path,
    world_config: WorldConfig | None = None,
    pretrain_config: PretrainConfig | None = None,
    *,
    train_model: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Generate the world, write its files and (unless `train_model` is False) pretrain the model."""
    out = Path(out)
    world_config = world_config or WorldConfig()
    pretrain_config = pretrain_config or PretrainConfig(seed=world_config.seed)
    world = generate_world(world_config)
    write_world(world, out)
    result: dict[str, Any] = {"facts": len(world.facts)}
    if train_model:
        result |= pretrain(world, out, pretrain_config, log)
    write_json(out / "world.json", {"world": asdict(world_config), "pretrain": asdict(pretrain_config), **result})
    write_manifest(out, stage="toyworld", config={"world": world_config, "pretrain": pretrain_config}, **result)
    return result

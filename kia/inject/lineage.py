"""Continuing an adapter (`kia inject BUILD --from-adapter OLD`): the checks that the parent fits
this run, its weights as the starting point, and the lineage the new adapter's manifest records.

An update trains the production adapter further on a new mixture, so the parent must be a LoRA of
the same shape on the same base: its tensors are copied into the new run's freshly built LoRA
layers, and a tensor of another rank or for another module has nowhere to go. The new adapter's
dropout, learning rate, epochs and loss may differ; the optimizer and the learning-rate schedule
start afresh (the parent's optimizer state is not kept in an adapter folder).

Lineage: `parent` (its folder and the hash of its weights, `kia.engines.adapter_id`) and `builds`,
every build the adapter has been trained on, oldest first (the parent's, then this run's). The
audit of an update (`kia audit NEW --against OLD`) reads OLD's builds to know which facts it must
keep.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kia.artifacts import read_manifest
from kia.errors import AdapterError


@dataclass(frozen=True)
class Parent:
    path: Path
    adapter_id: str
    config: dict[str, Any]  # its adapter_config.json
    manifest: dict[str, Any]
    builds: list[dict[str, Any]]  # the builds it was trained on, oldest first


def read_parent(path: str | Path) -> Parent:
    """The adapter to continue: a finished `kia inject` folder with safetensors weights."""
    from kia.engines import adapter_id, check_adapter

    folder = Path(path)
    config = check_adapter(folder)
    if not (folder / "adapter_model.safetensors").exists():
        raise AdapterError(f"--from-adapter {folder}: needs safetensors weights (adapter_model.safetensors)")
    manifest = read_manifest(folder, "inject")
    builds = list((manifest.get("lineage") or {}).get("builds") or [])
    if not builds:  # an adapter trained before lineage was recorded: its one build
        train = (manifest.get("inputs") or {}).get("train") or {}
        recorded = manifest.get("build") or (manifest.get("config") or {}).get("build")
        builds = [{"path": str(recorded), "train_sha256": train.get("sha256")}] if recorded else []
    return Parent(folder, adapter_id(folder), config, manifest, builds)


def _same_path(a: str, b: str) -> bool:
    return a == b or (Path(a).exists() and Path(b).exists() and Path(a).resolve() == Path(b).resolve())


def check_parent(parent: Parent, hp: dict[str, Any], model_id: str, base_sha: str | None) -> None:
    """One-line AdapterError naming both sides unless the parent has this run's base model, rank,
    alpha, rsLoRA setting and target modules (when they are named; "all-linear" resolves against the
    model, so it is checked once the LoRA layers exist, `check_targets`)."""
    recorded = parent.manifest.get("base_model") or {}
    theirs = str(recorded.get("id") or parent.config.get("base_model_name_or_path") or "")
    their_sha = recorded.get("sha256")
    if base_sha and their_sha:
        same_base = base_sha == their_sha
    else:
        same_base = not theirs or _same_path(theirs, model_id)
    if not same_base:
        raise AdapterError(
            f"--from-adapter {parent.path}: was trained on base model '{theirs}'"
            + (f" (sha256 {their_sha[:12]})" if their_sha else "")
            + f", this run's base model is '{model_id}'"
            + (f" (sha256 {base_sha[:12]})" if base_sha else "")
            + "; continue an adapter on its own base model"
        )
    wanted = {
        "rank": (parent.config.get("r"), hp["rank"]),
        "alpha": (parent.config.get("lora_alpha"), hp["alpha"]),
        "rslora": (bool(parent.config.get("use_rslora", False)), bool(hp["rslora"])),
    }
    differ = [
        f"{name} {theirs!r} (parent) vs {ours!r} (this run)"
        for name, (theirs, ours) in wanted.items()
        if theirs is not None and (float(theirs) != float(ours) if name != "rslora" else theirs != ours)
    ]
    if differ:
        raise AdapterError(
            f"--from-adapter {parent.path}: the LoRA shape differs: {'; '.join(differ)}; "
            "pass the parent's --rank / --alpha / --preset, or train a new adapter without --from-adapter"
        )
    if tuple(hp["targets"]) != ("all-linear",):  # explicit names: checked now; "all-linear" once resolved
        check_targets(parent, list(hp["targets"]))


def check_targets(parent: Parent, targets: Any) -> None:
    """The modules the new LoRA layers sit on (peft's resolved `target_modules`) must be the parent's."""
    theirs, ours = parent.config.get("target_modules"), targets
    if isinstance(theirs, list | tuple | set) and isinstance(ours, list | tuple | set):
        same = set(theirs) == set(ours)
    else:
        same = theirs == ours
    if not same:
        show = lambda t: ",".join(sorted(t)) if isinstance(t, list | tuple | set) else str(t)  # noqa: E731
        raise AdapterError(
            f"--from-adapter {parent.path}: the target modules differ: {show(theirs)} (parent) vs {show(ours)} "
            "(this run); pass the parent's --targets / --preset"
        )


def load_parent_weights(model: Any, parent: Parent) -> int:
    """Copy the parent's LoRA tensors into the new peft model's; the number copied. Every tensor
    must find its place and every LoRA tensor of the model must be given one."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    weights = load_file(str(parent.path / "adapter_model.safetensors"))
    try:
        result = set_peft_model_state_dict(model, weights)
    except RuntimeError as exc:  # a size mismatch the shape checks did not foresee
        raise AdapterError(
            f"--from-adapter {parent.path}: its tensors do not fit this run's LoRA layers ({exc})"
        ) from exc
    missing = [k for k in result.missing_keys if "lora_" in k]
    unexpected = list(result.unexpected_keys)
    if missing or unexpected:
        raise AdapterError(
            f"--from-adapter {parent.path}: its tensors do not fit this run's LoRA layers "
            f"({len(missing)} missing, e.g. {missing[:1]}; {len(unexpected)} unexpected, e.g. {unexpected[:1]})"
        )
    return len(weights)


def lineage(parent: Parent | None, build: Path, train_sha: str) -> dict[str, Any]:
    """The manifest's `lineage`: the parent (folder and weight hash) and every build seen, oldest first."""
    builds = list(parent.builds) if parent else []
    builds.append({"path": str(build), "train_sha256": train_sha})
    return {
        "parent": {"path": str(parent.path), "adapter_id": parent.adapter_id} if parent else None,
        "builds": builds,
    }

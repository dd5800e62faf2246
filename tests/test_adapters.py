"""Hostile adapter folders (issue 19): each is one line naming the file and what is wrong, before
peft sees it; an adapter whose finite weights overflow the model fails the audit for that.

Before these checks peft loaded an unknown config key, and a config without `target_modules`
(then ignored the weights it did not expect: a silent no-op), loaded NaN and infinite weights
without a word, and printed size mismatches (a wrong shape, a rank the weights do not hold) as a
page of text.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import numpy as np
import pytest
from fuzzing import examples
from hypothesis import event, example, given
from hypothesis import strategies as st
from safetensors.numpy import load_file, save_file

from kia.artifacts import write_json
from kia.engines import check_adapter
from kia.errors import AdapterError

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / "datasets" / "toyworld" / "model"
HIDDEN, INTER = 256, 704  # the toy model's sizes (config.json)


def key(layer: int, module: str, m: str) -> str:
    return f"base_model.model.model.layers.{layer}.mlp.{module}.{m}.weight"


def good_tensors(rank: int = 2) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    out = {}
    for layer in (0, 1):
        out[key(layer, "up_proj", "lora_A")] = rng.normal(0, 0.1, (rank, HIDDEN)).astype(np.float32)
        out[key(layer, "up_proj", "lora_B")] = rng.normal(0, 0.01, (INTER, rank)).astype(np.float32)
    return out


GOOD_CONFIG = {"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["up_proj"], "lora_dropout": 0.0,
               "base_model_name_or_path": str(TOY), "bias": "none", "task_type": "CAUSAL_LM"}  # fmt: skip


def make_adapter(folder: Path, config: dict | None = None, tensors: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "adapter_config.json", GOOD_CONFIG if config is None else config)
    save_file(good_tensors() if tensors is None else tensors, str(folder / "adapter_model.safetensors"))
    return folder


def _with(**changes) -> dict:
    return {k: v for k, v in {**GOOD_CONFIG, **changes}.items() if v is not ...}


def _tensors(change) -> dict:
    t = good_tensors()
    change(t)
    return t


A0, B0 = key(0, "up_proj", "lora_A"), key(0, "up_proj", "lora_B")
# case -> (config, tensors, raw weight bytes, the file blamed, what the line says); no model needed
CASES = {
    "an unknown config key": (_with(frobnicate=3), None, None, "adapter_config.json", r"unknown key\(s\) frobnicate"),
    "no r": (_with(r=...), None, None, "adapter_config.json", r"missing key\(s\) r;"),
    "no target_modules": (_with(target_modules=...), None, None, "adapter_config.json", "missing key"),
    "no peft_type": (_with(peft_type=...), None, None, "adapter_config.json", r"missing key\(s\) peft_type"),
    "a rank far beyond the weights": (_with(r=64), None, None, "adapter_config.json", "says rank 64 .* rank-2"),
    "r of the wrong type": (_with(r="2"), None, None, "adapter_config.json", "key 'r' is '2', which peft cannot use as int"),
    "not LoRA": (_with(peft_type="IA3"), None, None, "adapter_config.json", "LoRA adapters only"),
    "a broken target regex": (_with(target_modules="up_proj("), None, None, "adapter_config.json", "regular exp"),
    "a config that is a list": ([1, 2], None, None, "adapter_config.json", "not a peft adapter config"),
    "NaN weights": (None, _tensors(lambda t: t[B0].__setitem__((0, 0), np.nan)), None, "adapter_model.safetensors",
                    f"tensor {B0} holds 1 NaN and 0 infinite"),
    "infinite weights": (None, _tensors(lambda t: t[A0].fill(np.inf)), None, "adapter_model.safetensors",
                         f"{2 * HIDDEN} infinite value"),
    "a truncated file": (None, None, lambda d: d[:-100], "adapter_model.safetensors", "truncated: its tensors end"),
    "a file cut inside its header": (None, None, lambda d: d[:40], "adapter_model.safetensors", "header claims"),
    "junk after the tensors": (None, None, lambda d: d + b"junk", "adapter_model.safetensors", "4 bytes follow"),
    "a header that is not JSON": (None, None, lambda d: d[:8] + b"\xff" * 20 + d[28:], "adapter_model.safetensors",
                                  "header is not JSON"),
    "lora_A without lora_B": (None, _tensors(lambda t: t.pop(B0)), None, "adapter_model.safetensors",
                              "has lora_A but not its partner"),
    "factors of different ranks": (None, _tensors(lambda t: t.__setitem__(B0, np.zeros((INTER, 3), np.float32))),
                                   None, "adapter_model.safetensors", "not the two factors"),
    "weights for a module the config does not target": (
        None, _tensors(lambda t: t.update({key(0, "down_proj", "lora_A"): np.zeros((2, INTER), np.float32),
                                          key(0, "down_proj", "lora_B"): np.zeros((HIDDEN, 2), np.float32)})),
        None, "adapter_model.safetensors", r"which target_modules \['up_proj'\] .* would ignore them"),
    "no LoRA matrices at all": (None, {"x": np.zeros(3, np.float32)}, None, "adapter_model.safetensors",
                                "holds no LoRA matrices"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_a_hostile_adapter_is_one_line_naming_the_file(tmp_path, case):
    config, tensors, raw, blamed, says = CASES[case]
    folder = make_adapter(tmp_path / "a", config, tensors)
    if raw is not None:  # bytes cut, added or overwritten
        weights = folder / "adapter_model.safetensors"
        weights.write_bytes(raw(weights.read_bytes()))
    with pytest.raises(AdapterError) as info:
        check_adapter(folder)
    msg = str(info.value)
    assert "\n" not in msg and f"{folder}/{blamed}: " in msg, msg
    assert re.search(says, msg), msg


def test_a_good_adapter_passes(tmp_path):
    assert check_adapter(make_adapter(tmp_path / "a"))["r"] == 2
    rank_pattern = {"layers.1.mlp.up_proj": 3}  # peft's per-module ranks are honoured
    tensors = good_tensors()
    tensors[key(1, "up_proj", "lora_A")] = np.zeros((3, HIDDEN), np.float32)
    tensors[key(1, "up_proj", "lora_B")] = np.zeros((INTER, 3), np.float32)
    check_adapter(make_adapter(tmp_path / "b", _with(rank_pattern=rank_pattern), tensors))


# ---------------------------------------------------------------------------------- on the model


@pytest.fixture(scope="module")
def toy_model():
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(TOY))


MODEL_CASES = {
    "a tensor of the wrong shape": (
        None, _tensors(lambda t: t.__setitem__(A0, np.zeros((2, 10), np.float32))), "adapter_model.safetensors",
        r"model\.layers\.0\.mlp\.up_proj maps 256 -> 704 features .* \[2, 10\] and \[704, 2\]"),
    "a layer the model lacks": (
        None, _tensors(lambda t: t.update({key(99, "up_proj", m): t[key(0, "up_proj", m)] for m in ("lora_A", "lora_B")})),
        "adapter_model.safetensors", r"model\.layers\.99\.mlp\.up_proj, which .* does not have"),
    "a target module the model lacks": (
        _with(target_modules=["up_proj", "foo_proj"]), None, "adapter_config.json",
        r"target module 'foo_proj' is not in .* \(its linear layers: .*up_proj"),
}  # fmt: skip


@pytest.mark.model
@pytest.mark.skipif(not (TOY / "config.json").exists(), reason="no toy model")
@pytest.mark.parametrize("case", list(MODEL_CASES))
def test_an_adapter_that_does_not_fit_the_model_is_one_line(tmp_path, case, toy_model):
    config, tensors, blamed, says = MODEL_CASES[case]
    folder = make_adapter(tmp_path / "a", config, tensors)
    with pytest.raises(AdapterError) as info:
        check_adapter(folder, toy_model)
    msg = str(info.value)
    assert "\n" not in msg and f"{folder}/{blamed}: " in msg, msg
    assert re.search(says, msg), msg


# A valid adapter, then one hostile change: a config key dropped, added or retyped, bytes cut or
# flipped, a tensor made NaN, reshaped or moved to another module.
CONFIG_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-3, 100), st.text(max_size=8),
                          st.lists(st.sampled_from(["up_proj", "down_proj", "q_proj", "nope"]), max_size=3))  # fmt: skip
mutation = st.one_of(
    st.tuples(st.just("drop key"), st.sampled_from(sorted(GOOD_CONFIG))),
    st.tuples(st.just("set key"), st.sampled_from([*sorted(GOOD_CONFIG), "rank_pattern", "typo_key"]), CONFIG_VALUES),
    st.tuples(st.just("cut bytes"), st.integers(0, 40_000)),
    st.tuples(st.just("flip byte"), st.integers(0, 2_000), st.integers(1, 255)),
    st.tuples(st.just("poison"), st.sampled_from([np.nan, np.inf, -np.inf, 1e30]), st.integers(0, 3)),
    st.tuples(st.just("reshape"), st.integers(0, 3), st.integers(1, 5)),
    st.tuples(st.just("move"), st.integers(0, 3), st.sampled_from(["down_proj", "gate_proj", "q_proj", "nope"])),
    st.tuples(st.just("none")),
)


def _mutate(folder: Path, m: tuple) -> None:
    config = dict(GOOD_CONFIG)
    tensors = good_tensors()
    names = sorted(tensors)
    kind = m[0]
    if kind == "drop key":
        config.pop(m[1])
    elif kind == "set key":
        config[m[1]] = m[2]
    elif kind == "poison":
        tensors[names[m[2]]].flat[0] = m[1]
    elif kind == "reshape":
        t = tensors[names[m[1]]]
        tensors[names[m[1]]] = np.ascontiguousarray(t[:, : m[2]] if t.shape[1] > 2 else t[: m[2], :])
    elif kind == "move":
        for name in [n for n in names if f"layers.{m[1] % 2}." in n]:
            tensors[name.replace("up_proj", m[2])] = tensors.pop(name)
    make_adapter(folder, config, tensors)
    weights = folder / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    if kind == "cut bytes":
        weights.write_bytes(bytes(data[: m[1] % len(data)]))
    elif kind == "flip byte":
        data[m[1] % len(data)] ^= m[2]
        weights.write_bytes(bytes(data))


@pytest.mark.model
@pytest.mark.skipif(not (TOY / "config.json").exists(), reason="no toy model")
@given(m=mutation)
# found by a 400-input random run (KIA_FUZZ_EXAMPLES), each a traceback or a two-line message before
@example(m=("set key", "lora_dropout", 2))  # torch's Dropout raised ValueError inside peft
@example(m=("set key", "rank_pattern", None))  # peft called None.keys()
@example(m=("set key", "base_model_name_or_path", "\n"))  # the name went into the message raw
@example(m=("set key", "target_modules", "\n"))  # likewise the pattern
@example(m=("flip byte", 79, 1))  # the first tensor's dtype F32 -> G32: safetensors failed inside peft
@examples(40)
def test_an_adapter_either_fails_in_one_line_or_loads_every_weight_it_holds(tmp_path_factory, toy_model, m):
    """Whatever was done to it: a one-line AdapterError naming a file of the folder, or peft loads
    it onto the model and every LoRA weight in the file is the one in the model (nothing ignored,
    nothing NaN); targeted layers the file holds nothing for keep B = 0 (no effect)."""
    from peft import PeftModel

    folder = tmp_path_factory.mktemp("fuzz") / "a"
    _mutate(folder, m)
    model = copy.deepcopy(toy_model)
    try:
        check_adapter(folder, model)
    except AdapterError as exc:
        event(f"refused: {m[0]}")
        msg = str(exc)
        assert "\n" not in msg and (f"{folder}/adapter_config.json: " in msg or f"{folder}/adapter_model" in msg), msg
        return
    event(f"accepted: {m[0]}")
    peft_model = PeftModel.from_pretrained(model, str(folder))
    loaded = {k.replace(".default", ""): v for k, v in peft_model.state_dict().items() if "lora_" in k}
    weights = load_file(str(folder / "adapter_model.safetensors"))
    assert set(weights) <= set(loaded), set(weights) - set(loaded)  # no weight of the file ignored
    for name, value in weights.items():
        assert np.array_equal(loaded[name].numpy(), value), name
        assert np.isfinite(value).all()
    for name in set(loaded) - set(weights):  # targeted layers the file has nothing for stay unchanged
        assert "lora_A" in name or not loaded[name].any(), name


@pytest.mark.model
@pytest.mark.skipif(not (TOY / "config.json").exists(), reason="no toy model")
def test_overflowing_weights_are_counted_as_nonfinite_answers(tmp_path):
    """Finite weights (1e30) whose products overflow: the hf engine counts the adapted answers that
    came from NaN or infinite logits, and none of the base arm's."""
    from kia.engines import EngineConfig, Sampling, load_engine

    tensors = {k: np.full_like(v, 1e30) for k, v in good_tensors().items()}
    folder = make_adapter(tmp_path / "huge", tensors=tensors)
    engine = load_engine(EngineConfig(str(TOY), adapter=str(folder)))
    prompts = ["Q: Where does Mira Holt live?\nA:", "Q: What is 2 + 2?\nA:"]
    sampling = Sampling(n=1, temperature=0.0, max_new_tokens=2)
    engine.generate(prompts, sampling, adapter=False)
    engine.generate(prompts, sampling, adapter=True)
    assert engine.generated == {False: 2, True: 2}
    assert engine.nonfinite == {False: 0, True: 2}


def test_an_audit_with_nonfinite_answers_fails_whatever_the_policy(tmp_path):
    """The verdict for an adapter whose answers came from NaN logits: FAIL with that reason, even
    under a policy that passes everything else."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from test_policy import LENIENT, TwoArmEngine, _config, _write, make_world

    from kia.audit import audit

    class Overflowing(TwoArmEngine):
        nonfinite = {False: 0, True: 7}

    make_world(tmp_path)
    policy = _write(tmp_path, LENIENT)
    assert audit(_config(tmp_path, policy=str(policy)), engine=TwoArmEngine()).verdict == "PASS"
    result = audit(_config(tmp_path, policy=str(policy), overwrite=True), engine=Overflowing())
    assert result.verdict == "FAIL" and result.exit_code == 1
    assert result.reasons == [
        "the adapter's logits were NaN or infinite for 7 adapted answers: its weights overflow the model "
        "(retrain with a lower --lr, or check adapter_model.safetensors)"
    ]
    assert json.loads((tmp_path / "audit" / "audit.json").read_text())["sanity"]["nonfinite_answers"] == 7

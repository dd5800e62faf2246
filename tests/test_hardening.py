"""Tier 1: hostile input never crashes kia with a traceback and never loses a row (issue 7).

Property-based (hypothesis) over the fact loaders, the policy file and the exemplar file: any
input either loads or raises a `KiaError` that names the file; with `skip_invalid` every row is
either accepted or in rejects.jsonl. Plus adapters loaded safely and writes that fail cleanly.
"""

from __future__ import annotations

import errno
import json
import os
import re
from pathlib import Path

import pytest
from fuzzing import examples
from hypothesis import given
from hypothesis import strategies as st

from kia.artifacts import MANIFEST, read_jsonl, write_json, write_manifest
from kia.audit.policy import load_policy
from kia.engines.adapters import check_adapter
from kia.errors import AdapterError, ArtifactError, KiaError
from kia.facts import load_facts
from kia.probe import load_exemplar_sets

EXAMPLES = examples(150)  # derandomized in CI; KIA_FUZZ_EXAMPLES for a long run (tests/fuzzing.py)

# ------------------------------------------------------------------------------------- strategies

scalar = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=30), st.just("   ")
)
answers = st.one_of(
    scalar, st.lists(st.one_of(st.text(max_size=20), st.just(""), st.just(" "), st.integers()), max_size=3)
)
row = st.fixed_dictionaries(
    {},
    optional={
        "id": st.one_of(scalar, st.sampled_from(["a", "b", "c"])),  # few ids: duplicates happen
        "question": st.one_of(scalar, st.text(min_size=1, max_size=3000)),
        "answers": answers,
        "answer": st.one_of(scalar, st.fixed_dictionaries({"aliases": answers})),
        "relation": scalar,
        "paraphrases": st.one_of(scalar, st.lists(st.text(max_size=10), max_size=2)),
        "extra_field": scalar,
    },
)


def jsonl_line(r: dict, cut: int | None) -> str:
    text = json.dumps(r, ensure_ascii=False)
    return text[:cut] if cut is not None else text  # a cut line is truncated JSON


lines = st.lists(
    st.one_of(
        st.builds(jsonl_line, row, st.none()),
        st.builds(jsonl_line, row, st.integers(1, 20)),
        st.sampled_from(["[1, 2]", '"text"', "null", "{", "", "   "]),
    ),
    max_size=12,
)


def _write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def _check_error(exc: KiaError, path: Path) -> None:
    assert path.name in str(exc), f"the error does not name the file: {exc}"
    assert "\n" not in str(exc).strip() or len(str(exc)) < 2000


def _assert_no_row_lost(path: Path, folder: Path) -> None:
    rejects = folder / "rejects.jsonl"
    rejects.unlink(missing_ok=True)
    try:
        factset = load_facts(path, skip_invalid=True, rejects_path=rejects)
    except KiaError as exc:  # a file-level problem (not a table at all) stops even with skip_invalid
        _check_error(exc, path)
        return
    n_rejected = len(read_jsonl(rejects)) if rejects.exists() else 0
    assert factset.n_rejected == n_rejected
    assert len(factset.facts) + n_rejected == factset.n_rows
    ids = [f.id for f in factset.facts]
    assert len(ids) == len(set(ids))
    for f in factset.facts:
        assert f.question.strip() and f.answers and all(a.strip() for a in f.answers)


# ----------------------------------------------------------------------------------- fact loaders


@EXAMPLES
@given(data=st.binary(max_size=400))
def test_any_bytes_as_jsonl_load_or_fail_with_the_file_named(tmp_path, data):
    path = _write(tmp_path, "facts.jsonl", data)
    try:
        load_facts(path)
    except KiaError as exc:
        _check_error(exc, path)
    _assert_no_row_lost(path, tmp_path)


@EXAMPLES
@given(rows=lines)
def test_hostile_jsonl_rows_name_file_line_and_field_and_lose_nothing(tmp_path, rows):
    path = _write(tmp_path, "facts.jsonl", "\n".join(rows).encode())
    try:
        factset = load_facts(path)
    except KiaError as exc:
        _check_error(exc, path)
        # a row's error carries its line ("facts.jsonl:3: ... (field 'answers')"); else a whole-file one
        assert re.search(r"facts\.jsonl:\d+: ", str(exc)) or "no facts" in str(exc) or "empty" in str(exc), str(exc)
    else:
        assert len(factset.facts) == factset.n_rows
    _assert_no_row_lost(path, tmp_path)


@EXAMPLES
@given(
    cells=st.lists(
        st.lists(st.one_of(st.text(max_size=15), st.sampled_from(['"', '"a""b', "a,b", "\r", ""])), max_size=4),
        max_size=8,
    ),
    header=st.sampled_from(["id,question,answers", "question,answers", "id,question", "x,y,z", ""]),
)
def test_hostile_csv_loads_or_fails_cleanly(tmp_path, cells, header):
    text = header + "\n" + "\n".join(",".join(c) for c in cells)
    path = _write(tmp_path, "facts.csv", text.encode())
    try:
        load_facts(path)
    except KiaError as exc:
        _check_error(exc, path)
    _assert_no_row_lost(path, tmp_path)


def test_invalid_utf8_and_duplicate_ids_are_named(tmp_path):
    good = json.dumps({"id": "a", "question": "Q?", "answers": ["A"]})
    path = _write(tmp_path, "facts.jsonl", (good + "\n").encode() + b'{"id": "\xff\xfe"}\n' + (good + "\n").encode())
    with pytest.raises(KiaError, match=r"facts\.jsonl:2: "):
        load_facts(path)
    factset = load_facts(path, skip_invalid=True, rejects_path=tmp_path / "rejects.jsonl")
    rejects = read_jsonl(tmp_path / "rejects.jsonl")
    assert len(factset.facts) == 1 and len(rejects) == 2  # the bad bytes, and the duplicate of line 1
    assert any("line 1" in json.dumps(r) or ":1" in json.dumps(r) for r in rejects), rejects


# ----------------------------------------------------------------------------- config files


def _toml(v: object) -> str:
    """A TOML value (JSON strings are valid TOML basic strings; None inside a collection: "")."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(float(v)) if isinstance(v, float) and v != v else json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k, ensure_ascii=False)} = {_toml(x)}" for k, x in v.items()) + "}"
    return json.dumps("" if v is None else v, ensure_ascii=False)


toml_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")), max_size=20)
toml_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    toml_text,
)
policy_values = st.one_of(
    toml_scalar, st.lists(toml_scalar, max_size=2), st.dictionaries(toml_text, toml_scalar, max_size=2)
)


@EXAMPLES
@given(data=st.binary(max_size=300))
def test_any_bytes_as_policy_fail_with_the_file_named(tmp_path, data):
    path = _write(tmp_path, "policy.toml", data)
    try:
        load_policy(path)
    except KiaError as exc:
        _check_error(exc, path)


@EXAMPLES
@given(
    entries=st.dictionaries(
        st.sampled_from(["min_reliability", "max_negative_shift", "max_exploded_answers", "fail_on_noop", "typo_key"]),
        policy_values,
        max_size=4,
    )
)
def test_wrong_types_and_unknown_keys_in_a_policy_name_the_key(tmp_path, entries):
    path = tmp_path / "policy.toml"
    path.write_text("".join(f"{k} = {_toml(v)}\n" for k, v in entries.items() if v is not None), encoding="utf-8")
    try:
        load_policy(path)
    except KiaError as exc:
        _check_error(exc, path)
        assert any(k in str(exc) for k in entries), str(exc)


@EXAMPLES
@given(data=st.one_of(st.binary(max_size=200), st.builds(lambda v: json.dumps(v).encode(), policy_values)))
def test_a_broken_exemplar_file_fails_with_the_file_named(tmp_path, data):
    folder = tmp_path / "probe"
    folder.mkdir(exist_ok=True)
    _write(folder, "exemplars.json", data)
    try:
        load_exemplar_sets(folder)
    except KiaError as exc:
        _check_error(exc, folder / "exemplars.json")


# ------------------------------------------------------------------------------------- adapters


def _adapter(folder: Path, weights: str, base: str = "datasets/toyworld/model") -> Path:
    folder.mkdir()
    write_json(
        folder / "adapter_config.json",
        {"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["up_proj"], "base_model_name_or_path": base},
    )
    (folder / weights).write_bytes(b"\x80\x04not really a pickle")
    return folder


class _Model:
    def __init__(self, name: str, arch: str = "LlamaForCausalLM"):
        self.config = type("Config", (), {"_name_or_path": name, "architectures": [arch]})()


def test_a_pickled_adapter_is_refused_unless_allowed(tmp_path):
    folder = _adapter(tmp_path / "a", "adapter_model.bin")
    with pytest.raises(AdapterError, match=r"pickled \(adapter_model\.bin\).*--allow-pickle"):
        check_adapter(folder)
    assert check_adapter(folder, allow_pickle=True)["r"] == 2


def test_an_adapter_without_weights_is_refused(tmp_path):
    folder = _adapter(tmp_path / "a", "README.md")
    with pytest.raises(AdapterError, match="no adapter weights"):
        check_adapter(folder)


def test_an_adapter_of_another_base_model_names_both(tmp_path):
    folder = _adapter(tmp_path / "a", "adapter_model.safetensors", base="meta-llama/Llama-3.1-8B-Instruct")
    with pytest.raises(AdapterError) as info:
        check_adapter(folder, _Model("mistralai/Mistral-7B-Instruct-v0.3"))
    assert "meta-llama/Llama-3.1-8B-Instruct" in str(info.value)
    assert "mistralai/Mistral-7B-Instruct-v0.3" in str(info.value)
    write_manifest(folder, stage="inject", config={}, base_model_architectures=["MistralForCausalLM"])
    with pytest.raises(AdapterError, match=r"MistralForCausalLM.*LlamaForCausalLM"):
        check_adapter(folder, _Model("meta-llama/Llama-3.1-8B-Instruct"))


# ------------------------------------------------------------------------------- disk failures


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES, errno.EROFS])
def test_a_failed_write_is_a_clear_error_and_leaves_nothing_complete(tmp_path, monkeypatch, code):
    """A full disk or a read-only folder in the middle of writing: the error names the file and
    the cause, the temporary file is gone, and no manifest.json claims the folder is complete."""
    out = tmp_path / "stage"
    write_json(out / "facts.json", {"old": True})

    def fail(*_a, **_k):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(ArtifactError, match=r"cannot write .*facts\.json: (no space|permission denied)"):
        write_json(out / "facts.json", {"new": True})
    with pytest.raises(ArtifactError, match=r"manifest\.json"):
        write_manifest(out, stage="probe", config={})
    assert sorted(p.name for p in out.iterdir()) == ["facts.json"]  # no temp file, no manifest
    assert json.loads((out / "facts.json").read_text()) == {"old": True}
    assert not (out / MANIFEST).exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_a_read_only_output_folder_is_a_clear_error(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(ArtifactError, match="permission denied"):
            write_json(ro / "x.json", {})
    finally:
        ro.chmod(0o700)


def test_the_cli_turns_a_bad_facts_file_into_one_line(tmp_path):
    from click.testing import CliRunner

    from kia.cli import cli
    from kia.commands import register

    path = _write(tmp_path, "facts.jsonl", b'{"id": "a", "question": "Q?", "answers": []}\n')
    res = CliRunner().invoke(register(cli), ["probe", str(path), "-o", str(tmp_path / "p")])
    assert res.exit_code == 2
    assert "facts.jsonl:1: " in res.output and "answers" in res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "p" / MANIFEST).exists()

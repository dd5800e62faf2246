"""Tier 1: stage folders that were edited, damaged, or written by another kia (issue 19).

Each stage's manifest records the sha256 of the files the next stages read, and `read_manifest`
checks them; a manifest that is not kia's JSON, or of a newer or older folder format, is refused.
Every case goes through the real command (click's runner, in-process) and must end in one line,
exit code 2, naming the file and what to do.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from kia.artifacts import MANIFEST, read_json, write_json

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture
def world(tmp_path, monkeypatch):
    """A probe folder, a build made from it, and the scripted audit world; manifests with hashes."""
    from test_build import fake_embed, make_probe_dir
    from test_policy import make_world

    from kia.build import BuildConfig, build

    monkeypatch.setattr("kia.build.paraphrase._embed", fake_embed)
    probe = make_probe_dir(tmp_path / "probe", per_relation=10)
    _hash(probe, ["facts.parquet", "exemplars.json"])
    build(BuildConfig(probe=str(probe), output=str(tmp_path / "build"), unknown=2, heldout=6))
    audit_root = tmp_path / "scripted"
    audit_root.mkdir()
    adapter = make_world(audit_root)
    _hash(audit_root / "build", ["eval_heldout.jsonl", "eval_injected.jsonl", "train.jsonl"])
    _hash(adapter, ["adapter_model.safetensors", "adapter_config.json"])
    return tmp_path


def _hash(folder: Path, files: list[str]) -> None:
    """Record the hashes a stage records (the test worlds are written by hand, without them)."""
    from kia.artifacts import FORMAT, sha256_file

    _manifest(folder, format=FORMAT, files={name: sha256_file(folder / name) for name in files})


def _append(path: Path, text: str = "\n") -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(text)


def _manifest(folder: Path, **changes) -> None:
    manifest = read_json(folder / MANIFEST)
    manifest.update(changes)
    write_json(folder / MANIFEST, manifest)


def _legacy_corrupt_parquet(probe: Path) -> None:
    manifest = read_json(probe / MANIFEST)
    for key in ("files", "format"):  # a manifest of a kia before hashes and formats
        manifest.pop(key)
    write_json(probe / MANIFEST, manifest)
    (probe / "facts.parquet").write_bytes((probe / "facts.parquet").read_bytes()[:100])


# (what is done to which folder, the command that reads it, what the one line must say)
CASES = {
    "a split edited after the build": (
        lambda w: _append(w / "scripted" / "build" / "eval_heldout.jsonl", '{"id": "x"}\n'),
        "audit",
        r"eval_heldout\.jsonl: changed after manifest\.json was written .*restore the file or rerun `kia build`",
    ),
    "the training split edited": (
        lambda w: _append(w / "build" / "train.jsonl"),
        "inject",
        r"train\.jsonl: changed after manifest\.json was written",
    ),
    "adapter weights changed after training": (
        lambda w: _append(w / "scripted" / "adapter" / "adapter_model.safetensors"),
        "audit",
        r"adapter_model\.safetensors: changed after manifest\.json was written .*rerun `kia inject`",
    ),
    "a corrupt facts.parquet": (
        lambda w: (w / "probe" / "facts.parquet").write_bytes(b"PAR1 not really"),
        "build",
        r"facts\.parquet: changed after manifest\.json was written .*rerun `kia probe`",
    ),
    "a corrupt facts.parquet under a manifest without hashes": (
        lambda w: _legacy_corrupt_parquet(w / "probe"),
        "build",
        r"facts\.parquet: not a readable parquet file \(.*\); rerun `kia probe`",
    ),
    "a file the manifest lists is gone": (
        lambda w: (w / "probe" / "exemplars.json").unlink(),
        "build",
        r"exemplars\.json: missing, though manifest\.json lists it; rerun `kia probe`",
    ),
    "a manifest that is not JSON": (
        lambda w: (w / "probe" / MANIFEST).write_text('{"stage": "pro'),
        "build",
        r"manifest\.json: not valid JSON .*rerun `kia probe` into this folder with --overwrite",
    ),
    "a manifest that is not kia's": (
        lambda w: (w / "build" / MANIFEST).write_text("[1, 2, 3]"),
        "inject",
        r"manifest\.json: not a kia manifest \(no 'stage'\); rerun `kia build`",
    ),
    "a folder from a newer kia": (
        lambda w: _manifest(w / "probe", format=2, kia_version="0.3.0"),
        "build",
        r"manifest\.json: written by a newer kia \(kia 0\.3\.0, folder format 2; this is kia .*format 1\): "
        r"upgrade kia",
    ),
    "a folder from an older kia": (
        lambda w: _manifest(w / "scripted" / "adapter", format=0, kia_version="0.0.1"),
        "audit",
        r"manifest\.json: written by an older kia \(kia 0\.0\.1, folder format 0; .*\): rerun `kia inject`",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_tampered_or_foreign_folder_is_one_line_naming_the_file(world, case):
    from kia.cli import cli
    from kia.commands import register

    damage, command, expected = CASES[case]
    damage(world)
    args = {
        "build": ["build", str(world / "probe"), "--unknown", "1", "-o", str(world / "b2")],
        "inject": ["inject", str(world / "build"), "-o", str(world / "i2"), "--model", "x"],
        "audit": ["audit", str(world / "scripted" / "adapter"), "-o", str(world / "a2"), "--benchmarks", "none"],
    }[command]
    res = CliRunner().invoke(register(cli), args)
    assert res.exit_code == 2, (res.output, res.exception)
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.output, res.output
    assert re.search(expected, res.stderr), res.stderr


def test_a_folder_of_this_kia_reads_back(world):
    """The checks refuse nothing kia itself wrote."""
    from kia.artifacts import read_manifest

    for folder, stage in [(world / "probe", "probe"), (world / "build", "build")]:
        manifest = read_manifest(folder, stage)
        assert manifest["format"] == 1 and manifest["files"], manifest
    assert json.loads((world / "build" / MANIFEST).read_text())["files"].keys() >= {"train.jsonl", "eval_heldout.jsonl"}

"""Two kia commands writing one output folder at once: the second says the folder is in use and
changes nothing in it; the first's output is intact (issue 19).

The lock is taken before anything is written (the probe's rejects.jsonl used to be written by its
first pass before the lock, and a finished run's manifest was removed by --overwrite before it),
and it excludes for real: before the fix a lock file removed on exit let two processes hold it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kia.artifacts import LOCK, MANIFEST, FolderLock, claim_output, read_jsonl, write_json, write_manifest
from kia.errors import ArtifactError

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "datasets" / "toyworld" / "model"
sys.path.insert(0, str(Path(__file__).parent))

WORKER = """
import os, sys
from kia.artifacts import FolderLock
from kia.errors import ArtifactError
folder, rounds = sys.argv[1], int(sys.argv[2])
inside, held, overlaps = os.path.join(folder, "inside"), 0, 0
for _ in range(rounds):
    try:
        with FolderLock(folder):
            held += 1
            try:
                os.close(os.open(inside, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                overlaps += 1  # someone else holds the lock too
                continue
            os.unlink(inside)
    except ArtifactError:
        pass
print(held, overlaps)
"""


def test_the_folder_lock_excludes_under_contention(tmp_path):
    """Four processes take and release the lock as fast as they can; never two at once. The old
    lock (file removed after the unlock) let two in thousands of times in 4 x 2000 rounds."""
    procs = [
        subprocess.Popen([sys.executable, "-c", WORKER, str(tmp_path), "400"], stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    results = [tuple(map(int, p.communicate(timeout=120)[0].split())) for p in procs]
    assert sum(h for h, _ in results) > 0
    assert sum(o for _, o in results) == 0, results
    assert not (tmp_path / LOCK).exists()


def _finished(folder: Path) -> dict[str, bytes]:
    """A folder holding a finished run; returns its files."""
    write_json(folder / "result.json", {"mine": True})
    (folder / "rejects.jsonl").write_text('{"line": 9}\n')
    write_manifest(folder, stage="probe", config={})
    return _files(folder)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name != LOCK}


def _stage_calls(tmp_path: Path):
    """Each stage's call into `out` with --overwrite, on inputs good enough to reach the lock."""
    from test_build import make_probe_dir
    from test_policy import TwoArmEngine, make_world

    from kia.audit import AuditConfig, audit
    from kia.build import BuildConfig, build
    from kia.inject import InjectConfig, inject
    from kia.probe import ProbeConfig, probe

    adapter = make_world(tmp_path)
    probe_dir = make_probe_dir(tmp_path / "probe120", per_relation=10)
    facts = tmp_path / "facts.jsonl"
    facts.write_text(json.dumps({"id": "a", "question": "Q?", "answers": ["A"]}) + "\n" + "{bad\n")

    def run(stage: str, out: Path):
        if stage == "probe":
            return probe(
                ProbeConfig(facts=str(facts), model="scripted", output=str(out), overwrite=True, skip_invalid=True)
            )
        if stage == "build":
            return build(BuildConfig(probe=str(probe_dir), output=str(out), unknown=2, overwrite=True))
        if stage == "inject":
            return inject(InjectConfig(build=str(tmp_path / "build"), output=str(out), model="x", overwrite=True))
        return audit(
            AuditConfig(adapter=str(adapter), output=str(out), benchmarks=("none",), report=False, overwrite=True),
            engine=TwoArmEngine(),
        )

    return run


@pytest.mark.parametrize("stage", ["probe", "build", "inject", "audit"])
def test_a_second_command_into_a_folder_in_use_changes_nothing(tmp_path, stage, monkeypatch):
    from test_build import fake_embed

    monkeypatch.setattr("kia.build.paraphrase._embed", fake_embed)
    run = _stage_calls(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    before = _finished(out)
    with FolderLock(out):
        with pytest.raises(ArtifactError, match=r"out: is in use: another kia process is writing"):
            run(stage, out)
        assert _files(out) == before  # not the rejects, not the manifest (--overwrite)


def test_a_rerun_clears_what_a_killed_run_left(tmp_path):
    """Temporary files a SIGKILLed stage left in its folder (atomic writes' temps, the audit's
    scratch folder) are gone once the folder is claimed again; its work (a shard) stays."""
    out = tmp_path / "run"
    (out / "shards").mkdir(parents=True)
    (out / "shards" / "facts-00000.parquet").write_bytes(b"kept")
    (out / "shards" / ".facts-00001.parquet.abc123.tmp").write_bytes(b"half")
    (out / ".kia-tmp" / "lm-eval-tasks-x").mkdir(parents=True)
    (out / ".kia-tmp" / "lm-eval-tasks-x" / "0000_toy.yaml").write_text("include: x")
    with claim_output(out, overwrite=False):
        left = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.name != LOCK)
    assert left == ["shards", "shards/facts-00000.parquet"]


def test_a_failed_stage_removes_the_folder_it_created(tmp_path):
    out = tmp_path / "new"
    with pytest.raises(RuntimeError), claim_output(out, overwrite=False):
        raise RuntimeError("bad input")
    assert not out.exists()
    out.mkdir()
    (out / "keep").write_text("x")
    with pytest.raises(RuntimeError), claim_output(out, overwrite=False):
        raise RuntimeError("bad input")
    assert (out / "keep").exists()  # a folder it did not create stays


@pytest.mark.model
@pytest.mark.skipif(not (MODEL / "config.json").exists(), reason="no toy model")
def test_two_real_probes_into_one_folder(tmp_path):
    """The real commands: the first probes (with --skip-invalid), a second with other facts and
    --overwrite starts while it runs: exit 2, 'in use'; the first ends with its own output."""
    import polars as pl

    # small: the lock is held from the start, through the imports and the model load (seconds)
    rows = [json.loads(line) for line in (MODEL.parent / "facts.jsonl").open(encoding="utf-8")][:8]
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    first.write_text("".join(json.dumps(r) + "\n" for r in rows) + json.dumps(rows[0]) + "\n")  # a duplicate id
    second.write_text("".join(json.dumps(r) + "\n" for r in rows[:5]) + '{"question": ""}\n')
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "kia", "probe", "--sets", "1", "--samples", "1", "--shard-size", "4"]
    proc = subprocess.Popen([*cmd, str(first), "-o", str(out), "--skip-invalid"], cwd=ROOT, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not (out / LOCK).exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    res = subprocess.run(
        [*cmd, str(second), "-o", str(out), "--skip-invalid", "--overwrite"], cwd=ROOT, capture_output=True, text=True
    )
    still_running = proc.poll() is None
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert still_running, "the first probe ended before the second one tried the lock"
    assert res.returncode == 2 and "is in use" in res.stderr and res.stderr.count("\n") == 1, res.stderr
    table = pl.read_parquet(out / "facts.parquet")
    assert table["id"].to_list() == [r["id"] for r in rows]
    rejects = read_jsonl(out / "rejects.jsonl")
    assert [r["line"] for r in rejects] == [9] and "duplicate id" in rejects[0]["reason"]
    assert json.loads((out / MANIFEST).read_text())["inputs"]["facts"]["path"] == str(first)

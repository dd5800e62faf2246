"""Tier 2: `kia demo` end to end on the toy world, the way a user calls it (smaller sample)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from kia.artifacts import read_json

pytestmark = pytest.mark.model


def cli():
    from kia.cli import cli as group
    from kia.commands import register

    return register(group)


def test_demo_runs_every_stage_and_writes_the_report(tmp_path):
    out = tmp_path / "demo"
    args = ["demo", "-o", str(out), "--facts-per-relation", "16", "--unknown", "12", "--epochs", "4", "--lr", "1e-2"]
    result = CliRunner().invoke(cli(), args)
    assert result.exit_code == 0, result.output
    for stage, folder in (("probe", "probe"), ("build", "build"), ("inject", "adapter"), ("audit", "audit")):
        assert read_json(out / folder / "manifest.json")["stage"] == stage
    assert "1/4 probe" in result.output and "4/4 audit" in result.output
    audit = read_json(out / "audit" / "audit.json")
    assert f"verdict: {audit['verdict']}" in result.output
    assert all(reason in result.output for reason in audit["reasons"])
    assert audit["metrics"]["reliability"]["adapted"] > audit["metrics"]["reliability"]["base"]
    report = out / "audit" / "report.html"
    assert report.stat().st_size > 10_000 and f"report: {report}" in result.output
    # A second run into the same folder refuses to clobber it unless asked.
    again = CliRunner().invoke(cli(), args)
    assert again.exit_code == 2 and "--overwrite" in again.output

"""The HTML report: a pure function of audit.json, self-contained, and inert whatever the data holds.

The pure tests check the HTML text. The `browser` tests open it in Debian's headless Chromium (no
playwright or selenium): a screenshot (kept in test-artifacts/report.png), and a hostile variant
whose payloads would change the page title, set an attribute or fetch from a local canary server if
any of them ran. "No network request" is judged twice: the canary server must see no request, and
Chromium's net log (--log-net-log) must hold no request started by the page (Chromium's own
background requests, initiator "not an origin", are ignored). A control page with the same payloads
unescaped proves that both detectors fire.
"""

from __future__ import annotations

import http.server
import json
import re
import shutil
import struct
import subprocess
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner
from markupsafe import escape

from kia.errors import ArtifactError
from kia.report import render_html, render_report

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "data" / "audit"
EXAMPLE = ROOT / "reports" / "example" / "report.html"
CSP = re.compile(r'<meta http-equiv="Content-Security-Policy"[^>]*>')


def fixture() -> dict:
    return json.loads((FIXTURE / "audit.json").read_text(encoding="utf-8"))


def render(tmp_path: Path, audit: dict, name: str = "audit") -> str:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "audit.json").write_text(json.dumps(audit), encoding="utf-8")
    return render_report(folder).read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def html(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = render_report(FIXTURE, tmp_path_factory.mktemp("report") / "report.html")
    return out.read_text(encoding="utf-8")


# --- content -----------------------------------------------------------------------------------


def test_verdict_comes_first_with_every_reason(html: str) -> None:
    audit = fixture()
    assert html.index('class="badge">FAIL<') < html.index('id="metrics"')
    for reason in audit["reasons"]:
        assert str(escape(reason)) in html


def test_every_metric_and_its_numbers(html: str) -> None:
    for name in fixture()["metrics"]:
        assert f'<td class="metric">{escape(name)}</td>' in html
    for text in ("0.041", "0.932", "+0.891", "0.862 to 0.918", "&lt; 0.001", "-135", "-161 to -108", "0.440"):
        assert text in html


def test_sections_in_order(html: str) -> None:
    ids = ["verdict", "metrics", "curve", "shift", "collapse", "refusals", "benchmarks", "examples", "provenance"]
    positions = [html.index(f'<section id="{i}">') for i in ids]
    assert positions == sorted(positions)


def test_charts_and_tables(html: str) -> None:
    assert html.count("<svg ") == 2 and "<polyline" in html  # the curve and the benchmark forest plot
    assert ">221<small>92.1 %</small>" in html  # a heatmap cell: count and row share
    assert "MaybeKnown → Unknown" in html and "19.4 %" in html
    assert html.count('class="hot"') == 6  # exploded answers marked in both top-10 lists
    assert "29.2 %" in html and "8.0 %" in html  # refusals per category; a forgetting rate
    assert "max_negative_shift" in html and "transformers" in html


def test_missing_sections_say_not_measured(tmp_path: Path) -> None:
    page = render(tmp_path, {"verdict": "PASS", "reasons": []})
    assert "PASS" in page and "Every rule of the policy holds." in page
    for what in ("Metrics", "Training curve", "Knowledge shift", "Answer collapse", "Refusals", "Benchmarks"):
        assert f"{what}: not measured" in page


def test_wrong_types_do_not_crash(tmp_path: Path) -> None:
    audit = {
        "verdict": "FAIL",
        "reasons": "not a list",
        "metrics": {"reliability": {"base": "x", "adapted": None, "delta": float("nan")}, "odd": 3},
        "curve": [{"epoch": "one"}, {"epoch": 1, "reliability": "high"}, 7],
        "shift": {"matrix": [[1, None], "row", [0, 0, 0]], "positive": [], "reasons": {"positive": 2}},
        "collapse": {"base": [], "adapted": {"top": [["a"], "b", ["c", 2]]}, "exploded": [1]},
        "refusals": {"base": "n/a", "by_category": ["Unknown"]},
        "benchmarks": {"t": {"delta": None}, "u": "bad"},
        "examples": {"shifted": [None, {"question": 5}]},
        "provenance": {"policy": [1], "versions": None, "adapter": {"nested": True}},
    }
    assert "FAIL" in render(tmp_path, audit)


def test_render_is_deterministic_and_atomic(tmp_path: Path) -> None:
    first = render(tmp_path, fixture(), "a")
    assert first == render(tmp_path, fixture(), "b")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["audit.json", "report.html"]


def test_example_report_is_current() -> None:
    """reports/example/report.html is the fixture rendered; rerun `kia report tests/data/audit -o ...`."""
    assert EXAMPLE.read_text(encoding="utf-8") == render_html(fixture())


# --- errors ------------------------------------------------------------------------------------


def test_missing_audit_json_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match=re.escape(str(tmp_path / "audit.json"))):
        render_report(tmp_path)
    with pytest.raises(ArtifactError, match="audit.json"):
        render_report(tmp_path / "no-such-folder")


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"metrics": {}}', ""])
def test_invalid_audit_json(tmp_path: Path, text: str) -> None:
    (tmp_path / "audit.json").write_text(text, encoding="utf-8")
    with pytest.raises(ArtifactError, match=re.escape(str(tmp_path / "audit.json"))):
        render_report(tmp_path)
    assert not (tmp_path / "report.html").exists()


def test_command(tmp_path: Path) -> None:
    from kia.commands.report import report

    out = tmp_path / "page.html"
    result = CliRunner().invoke(report, [str(FIXTURE), "-o", str(out)], catch_exceptions=False)
    assert result.exit_code == 0 and str(out) in result.output
    assert out.read_text(encoding="utf-8") == EXAMPLE.read_text(encoding="utf-8")
    result = CliRunner().invoke(report, [str(tmp_path / "missing")])
    assert isinstance(result.exception, ArtifactError)


# --- hostile data ------------------------------------------------------------------------------


def test_hostile_strings_render_as_text(html: str) -> None:
    assert "<script" not in html  # not one script element, from data or from the template
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;script&gt;document.title=&#39;PWNED&#39;&lt;/script&gt;" in html
    assert "<img" not in html and "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;" in html
    assert "&lt;svg onload=alert(1)&gt;" in html and html.count("<svg") == 2
    assert "javascript:alert(1)" in html  # shown as text ...
    assert not re.search(r"""(href|src|action)\s*=\s*["']?\s*javascript:""", html, re.I)  # ... never a link
    assert not re.search(r"<[a-z][^>]*\son[a-z]+\s*=", html, re.I)  # no event-handler attribute anywhere


def test_very_long_string_is_cut_with_a_count(html: str) -> None:
    long_question = next(e["question"] for e in fixture()["examples"]["shifted"] if e["id"] == "long-0001")
    assert len(long_question) > 20_000
    assert str(escape(long_question[:300])) in html
    assert f"(+{len(long_question) - 300:,} characters)" in html
    assert long_question[:1000] not in html and len(html) < 100_000


def test_no_network_references(html: str) -> None:
    assert not re.search(r"""(src|href|action|poster)\s*=\s*["']?\s*(https?:)?//""", html, re.I)
    assert not re.search(r"url\(|@import|<link|<iframe|<object|<embed", html, re.I)
    assert re.findall(r'href="([^"]*)"', html) and all(h.startswith("#") for h in re.findall(r'href="([^"]*)"', html))
    assert "default-src 'none'" in CSP.search(html).group(0)


# --- in a real browser -------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium")
browser = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",  # nothing leaves the machine
]


def chromium(tmp_path: Path, page: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    cmd = [CHROMIUM or "chromium", *FLAGS, f"--user-data-dir={profile}", *args, page.as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def page_requests(netlog: Path) -> list[str]:
    """URLs the page asked for, from a Chromium net log (the browser's own requests left out)."""
    text = netlog.read_text(encoding="utf-8")
    try:
        log = json.loads(text)
    except json.JSONDecodeError:  # a log cut short at exit lacks its closing brackets
        log = json.loads(text.rstrip().rstrip(",") + "]}")
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return [
        e["params"]["url"]
        for e in log["events"]
        if e["type"] == start and "url" in e.get("params", {}) and e["params"].get("initiator") != "not an origin"
    ]


class Canary:
    """A local HTTP server that records every path asked of it."""

    def __init__(self) -> None:
        hits = self.hits = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hits.append(self.path)
                self.send_response(404)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def payloads(url: str) -> list[str]:
    return [
        "<script>document.title='PWNED'</script>",
        f"<img src=\"{url}/img\" onerror=\"document.body.setAttribute('data-pwned','1')\">",
        f"\"><img src=x onerror=\"document.body.setAttribute('data-pwned','1')\"><link rel=stylesheet href={url}/css>",
        f'<iframe src="{url}/frame"></iframe><meta http-equiv="refresh" content="0;url={url}/refresh">',
        f"<style>body{{background:url({url}/bg)}}</style>]]></text><image href='{url}/svg'/>",
        f"javascript:fetch('{url}/js') {url}/plain",
    ]


def hostile_audit(url: str) -> dict:
    """The fixture with a canary payload in every kind of place data reaches."""
    audit, p = fixture(), payloads(url)
    audit["reasons"].append(p[0] + p[1])
    audit["metrics"][f"benchmark/{p[2]}"] = audit["metrics"]["reliability"]
    audit["benchmarks"][p[4]] = audit["benchmarks"]["toy_mc"]  # lands in SVG <text> and <title>
    audit["collapse"]["adapted"]["top"].append([p[3], 2])
    audit["collapse"]["exploded"].append({"answer": p[1], "base": 0, "adapted": 9})
    audit["refusals"]["by_category"][p[2]] = {"base": 0.1, "adapted": 0.2, "n": 3}
    ids = ("base_answer", "adapted_answer", "question", "id", "base_category", "adapted_category")
    audit["examples"]["shifted"].append(dict(zip(ids, p, strict=True)))
    audit["provenance"].update(adapter=p[5], model=p[3], policy={p[1]: p[4]})
    return audit


@browser
@pytest.mark.browser
def test_screenshot(tmp_path: Path) -> None:
    page = render_report(FIXTURE, tmp_path / "report.html")
    shot = ROOT / "test-artifacts" / "report.png"
    shot.parent.mkdir(exist_ok=True)
    shot.unlink(missing_ok=True)
    chromium(tmp_path, page, f"--screenshot={shot}", "--window-size=1200,3000")
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", data[16:24]) == (1200, 3000)
    assert len(data) > 20_000


def _load(tmp_path: Path, page: Path) -> tuple[str, list[str]]:
    netlog = tmp_path / f"{page.stem}.netlog.json"
    dom = chromium(tmp_path, page, "--dump-dom", f"--log-net-log={netlog}").stdout
    return dom, page_requests(netlog)


@browser
@pytest.mark.browser
def test_no_script_runs_and_no_request_is_made(tmp_path: Path) -> None:
    canary = Canary()
    try:
        # Control: the same payloads, unescaped, do run and do fetch, so both detectors work.
        control = tmp_path / "control.html"
        control.write_text("<!DOCTYPE html><title>control</title><body>" + "".join(payloads(canary.url)[:2]))
        dom, requests = _load(tmp_path, control)
        assert "<title>PWNED</title>" in dom and "data-pwned" in re.search(r"<body[^>]*>", dom).group(0)
        assert "/img" in canary.hits and any(r.endswith("/img") for r in requests)

        canary.hits.clear()
        folder = tmp_path / "audit"
        folder.mkdir()
        (folder / "audit.json").write_text(json.dumps(hostile_audit(canary.url)), encoding="utf-8")
        page = render_report(folder)
        bare = tmp_path / "no-csp.html"  # escaping alone must suffice: the same page without its CSP
        bare.write_text(CSP.sub("", page.read_text(encoding="utf-8")), encoding="utf-8")
        for candidate in (page, bare):
            dom, requests = _load(tmp_path, candidate)
            assert re.search(r"<title>(.*?)</title>", dom).group(1) == "kia audit report: FAIL"
            assert "data-pwned" not in re.search(r"<body[^>]*>", dom).group(0)
            assert not re.search(r"<(script|img|iframe|link|image|style)\b", dom.split("</head>", 1)[1])
            assert "&lt;script&gt;document.title='PWNED'&lt;/script&gt;" in dom  # shown as text
            assert requests == [], requests
        assert canary.hits == []
    finally:
        canary.close()

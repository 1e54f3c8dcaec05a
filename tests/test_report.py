from __future__ import annotations

import base64
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from embedensemble.errors import RunNotFoundError
from embedensemble.report import build_report
from embedensemble.report.__main__ import main

try:
    from fake_run import make_fake_run
except ImportError:  # tests/ turned into a package
    from tests.fake_run import make_fake_run

REPO = Path(__file__).resolve().parents[1]
FIGURES = ("per_emotion_f1", "threshold_curves", "member_correlation", "label_cooccurrence")
DATA_URI = re.compile(r'<img[^>]*src="data:image/png;base64,([^"]+)"')


def _not_blank(image: Image.Image, min_std: float = 5.0) -> bool:
    return float(np.asarray(image.convert("L"), dtype=np.float64).std()) > min_std


@pytest.fixture(scope="module")
def full_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = make_fake_run(tmp_path_factory.mktemp("runs") / "full", members=("tfidf", "minilm", "e5"), holdout_member="e5")
    return build_report(run)


def test_report_files_and_embedded_images(full_report: Path) -> None:
    out = full_report.parent
    assert full_report == out / "report.html" and out.name == "report"
    for key in FIGURES:
        with Image.open(out / f"{key}.png") as png:
            assert png.format == "PNG" and _not_blank(png)
    text = full_report.read_text(encoding="utf-8")
    payloads = DATA_URI.findall(text)
    assert len(payloads) == len(FIGURES)
    for payload in payloads:
        image = Image.open(io.BytesIO(base64.b64decode(payload)))
        assert image.format == "PNG" and image.width > 100 and _not_blank(image)
    # self-contained: nothing fetched from disk or network
    assert not re.search(r'(src|href)="(?!data:)', text)


def test_report_tables(full_report: Path) -> None:
    text = full_report.read_text(encoding="utf-8")
    for expected in ("Out-of-fold (train)", "Evaluation split", "tfidf", "minilm", "e5", "stack", "macro_f1",
                     "Thresholds", "holdout", "surprise", "semeval", "tfidf @0.5", "members_stacked"):
        assert expected in text
    assert "Not drawn" not in text and "Problems found" not in text


def test_partial_run_degrades_and_removes_stale_figures(tmp_path: Path) -> None:
    run = make_fake_run(tmp_path / "partial", members=("only",), with_eval=False)
    (run / "report").mkdir()
    (run / "report" / "threshold_curves.png").write_bytes(b"stale")
    for name in ("stack_oof.npy", "metrics.json", "thresholds.json"):
        (run / name).unlink()
    (run / "run.json").write_text("{broken", encoding="utf-8")
    html = build_report(run).read_text(encoding="utf-8")
    assert html.count("Not drawn") == 3  # bars, curves, correlation (one member); co-occurrence still drawn
    assert "at least two members" in html and "not been stacked" in html
    assert "run.json is not valid JSON" in html
    assert not (run / "report" / "threshold_curves.png").exists()
    assert (run / "report" / "label_cooccurrence.png").exists()


def test_missing_run_raises(tmp_path: Path) -> None:
    with pytest.raises(RunNotFoundError, match="does not exist"):
        build_report(tmp_path / "nope")


def test_cli_in_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--run", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and str(tmp_path / "missing") in err


def test_cli_subprocess_missing_run_has_no_traceback(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "embedensemble.report", "--run", str(missing)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip() == f"error: run folder {missing} does not exist"


CHROMIUM = next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p), None)
_CHECK_SCRIPT = (
    '<script>window.addEventListener("load",function(){var p=document.createElement("pre");p.id="imgcheck";'
    'p.textContent=Array.from(document.images).map(function(i){return i.complete+":"+i.naturalWidth})'
    '.join(",");document.body.appendChild(p);});</script></body>'
)


def _chromium(*args: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--hide-scrollbars", f"--user-data-dir={profile}", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (apt-get install -y chromium)")
def test_report_renders_in_headless_chromium(full_report: Path, tmp_path: Path) -> None:
    shot = tmp_path / "shot.png"
    proc = _chromium(f"--screenshot={shot}", "--window-size=1200,3000", full_report.as_uri())
    assert shot.exists(), proc.stderr[-2000:]
    with Image.open(shot) as image:
        assert image.size == (1200, 3000)
        assert _not_blank(image, min_std=20.0)

    # the browser decoded every embedded image (naturalWidth > 0), checked on a copy with a probe script
    probe = tmp_path / "probe.html"
    probe.write_text(full_report.read_text(encoding="utf-8").replace("</body>", _CHECK_SCRIPT, 1), encoding="utf-8")
    dom = _chromium("--dump-dom", probe.as_uri()).stdout
    found = re.search(r'<pre id="imgcheck">([^<]*)</pre>', dom)
    assert found, dom[-2000:]
    states = found.group(1).split(",")
    assert len(states) == len(FIGURES)
    assert all(s.startswith("true:") and int(s.split(":")[1]) > 0 for s in states), states

"""The dashboard and `report --html`: one set of Jinja2 templates, rendered in real headless Chromium."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from conftest import DAY, Tree
from servefix import served, token_file

HOSTILE = "<img src=x onerror=alert(1)>.mp4"
CJK = "运行实时日志.log"
POLICY = """\
version: 1
settings: {{state_dir: {state}, settle: 0s, guard_max_used: 80%}}
policies:
  - name: outputs
    path: {root}
    match: ["**/*.mp4"]
    older_than: 7d
    action: delete
  - name: logs
    path: {root}
    match: ["**/*.log"]
    action: warn
    when_size_above: 1KiB
"""


def _browser() -> str:
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return browser


def _chromium(url: str, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}"]
    return subprocess.run([_browser(), *flags, *extra, url], capture_output=True, text=True, timeout=120)


def _cjk_font() -> None:
    fonts = subprocess.run(["fc-list", ":lang=zh", "family"], capture_output=True, text=True).stdout.strip()
    if not fonts:
        pytest.skip("no CJK font installed (apt-get install fonts-wqy-zenhei)")


def _samples(config_path: Path, root: Path) -> None:
    """Twelve hours of trend samples: the filesystem filling 1% an hour, the logs growing."""
    from janitor.config import load_config
    from janitor.samples import Sample, record

    config = load_config(config_path)
    now = time.time()
    total = 10 * 1024**3
    rows = [Sample(now - (12 - h) * 3600, str(root), total, int(total * (0.60 + 0.01 * h)),
                   int(total * (0.40 - 0.01 * h)), 100 + h, (100 + 5 * h) * 1024**2, (10 + 3 * h) * 1024**2)
            for h in range(12)]
    record(config, rows)


@pytest.fixture
def populated(tree: Tree) -> Tree:
    tree.file(f"out/{HOSTILE}", 2000, age=30 * DAY)
    tree.file("out/render_1017.mp4", 5000, age=40 * DAY)
    tree.file("out/new.mp4", 500, age=1 * DAY)
    tree.file(f"logs/{CJK}", 4000, age=0.1 * DAY)
    return tree


def test_dashboard_in_headless_chromium(populated: Tree, write_config, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _cjk_font()
    cfg = write_config(POLICY, root=populated.root)
    _samples(cfg, populated.root)
    with served("-c", cfg, "--no-auth", "--sample-interval", "0") as srv:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            page = c.get("/")
        assert page.status_code == 200
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        html = page.text
        # nothing loaded from elsewhere: every URL in the page is the server's own
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", html) and "@import" not in html
        assert "&lt;img src=x onerror=alert(1)&gt;.mp4" in html and HOSTILE not in html
        dom = _chromium(srv.url + "/", tmp_path, "--dump-dom", "--virtual-time-budget=3000")
        if dom.returncode != 0 and not dom.stdout:
            pytest.skip(f"chromium cannot start here: {dom.stderr.strip()[-300:]}")
        text = dom.stdout
        assert CJK in text  # the Chinese log name as text
        assert "&lt;img src=x onerror=alert(1)&gt;.mp4" in text and "<img" not in text  # text, never an element
        assert "what each policy would do now" in text and "last runs" not in text  # no run yet
        assert "full in" in text and "over its threshold in" in text  # the forecast from the trend
        assert text.count("<polyline") >= 3  # usage, all files, logs
        assert '<option value="outputs">outputs</option>' in text  # the page's script ran
        assert "logs: size at" in text  # the warn threshold passed (size limit)
        for name, size in (("wall", "1920,1080"), ("phone", "390,1600")):
            shot = Path(os.environ.get("JANITOR_SCREENSHOTS", tmp_path)) / f"dashboard-{name}.png"
            _chromium(srv.url + "/", tmp_path, f"--screenshot={shot}", f"--window-size={size}",
                      "--virtual-time-budget=3000")
            assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


def test_dashboard_with_a_token_shows_no_data_without_it(populated: Tree, write_config, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg = write_config(POLICY, root=populated.root)
    token = "dash-" + "d" * 40
    with served("-c", cfg, "--token-file", token_file(tmp_path, token), "--sample-interval", "0") as srv, \
            httpx.Client(base_url=srv.url, timeout=30) as c:
        shell = c.get("/").text
        assert "enter the API token" in shell and "render_1017" not in shell and CJK not in shell
        assert "sessionStorage" in shell and "document.cookie" not in shell
        assert c.get("/dashboard/content").status_code == 401
        content = c.get("/dashboard/content", headers={"Authorization": f"Bearer {token}"}).text
        assert "render_1017.mp4" in content and CJK in content


def test_report_html_uses_the_same_templates(populated: Tree, write_config, cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg = write_config(POLICY, root=populated.root)
    _samples(cfg, populated.root)
    page = tmp_path / "report.html"
    assert cli("report", "-c", cfg, "--html", page).returncode == 0
    text = page.read_text()
    assert "<script" not in text and "&lt;img src=x onerror=alert(1)&gt;.mp4" in text and CJK in text
    assert "Noto Sans CJK SC" in text and "WenQuanYi Zen Hei" in text  # the font stack's CJK fallbacks
    assert "<polyline" in text and "full in" in text

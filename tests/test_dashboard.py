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


HOSTILE_PAGE = """<!doctype html><html><body>
<form id="f" method="POST" action="{api}/api/v1/runs" enctype="text/plain" target="sink">
  <input name='{{"policies": ["outputs"], "x": "' value='"}}'>
</form>
<iframe name="sink"></iframe>
<script>
const api = "{api}";
const body = JSON.stringify({{policies: ["outputs"], dry_run: false}});
// a "simple" request needs no preflight: the browser sends it as it is
fetch(api + "/api/v1/runs", {{method: "POST", mode: "no-cors", headers: {{"Content-Type": "text/plain"}}, body}});
// a JSON request needs a CORS preflight, which the server never answers
fetch(api + "/api/v1/runs", {{method: "POST", headers: {{"Content-Type": "application/json"}}, body}})
  .then(() => document.title = "json-sent", e => document.title = "json-blocked");
document.getElementById("f").submit();
</script></body></html>"""


def test_another_sites_page_cannot_start_a_run(populated: Tree, write_config, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Even with --no-auth on loopback, a page from another origin in a real browser starts nothing."""
    import http.server
    import threading

    cfg = write_config(POLICY, root=populated.root)
    victim = populated.root / "out" / "render_1017.mp4"
    with served("-c", cfg, "--no-auth", "--sample-interval", "0") as srv:
        page = HOSTILE_PAGE.format(api=srv.url)

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                data = page.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        evil = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=evil.serve_forever, daemon=True).start()
        try:
            dom = _chromium(f"http://127.0.0.1:{evil.server_address[1]}/", tmp_path, "--dump-dom",
                            "--virtual-time-budget=5000")
            if dom.returncode != 0 and not dom.stdout:
                pytest.skip(f"chromium cannot start here: {dom.stderr.strip()[-300:]}")
        finally:
            evil.shutdown()
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            assert c.get("/api/v1/runs").json() == []  # no run was started
        forbidden = srv.events("api_forbidden")
        assert forbidden and all(e["origin"].startswith("http://127.0.0.1:") for e in forbidden)  # it did try
        assert "<title>json-sent</title>" not in dom.stdout  # the preflight failed: the JSON request never left
    assert victim.exists()

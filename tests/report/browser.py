"""Open a report page in Debian's headless Chromium and read back what it rendered: per table the body rows
with a height on screen, per image its natural width once loaded. A copy of the page gets a small script that
writes this into the DOM on ``load``; ``--dump-dom`` returns it. Chromium runs in its own session and every
process of that session is killed afterwards."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

CHECK_PAGE = "_render_check.html"
CHECK_SCRIPT = """<script>
window.addEventListener('load', () => {
  const tables = [...document.querySelectorAll('table')].map(t => ({id: t.id,
    rows: [...t.querySelectorAll('tbody tr')].filter(r => r.getBoundingClientRect().height > 0).length}));
  const images = [...document.images].map(i => ({src: i.getAttribute('src'), naturalWidth: i.naturalWidth,
    shownWidth: i.getBoundingClientRect().width}));
  const out = document.createElement('pre');
  out.id = 'render-check';
  out.textContent = JSON.stringify({tables, images});
  document.body.appendChild(out);
});
</script>"""
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium() -> str:
    """The system Chromium; AssertionError saying how to install it when there is none."""
    path = shutil.which("chromium")
    assert path, "Chromium is not installed: apt-get install -y chromium (.ci/run does this on CI)"
    return path


def _session_processes(sid: int) -> list[int]:
    """Live (not zombie) processes of session ``sid``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[3]) == sid:
            found.append(int(stat.parent.name))
    return found


def rendered(report_dir: Path, profile_dir: Path, timeout_s: float = 90.0) -> dict:
    """``{"tables": [{"id", "rows"}], "images": [{"src", "naturalWidth", "shownWidth"}]}`` as Chromium rendered
    ``report_dir/index.html``. Asserts that no Chromium process is left."""
    page = (report_dir / "index.html").read_text(encoding="utf-8")
    assert "</body>" in page
    (report_dir / CHECK_PAGE).write_text(page.replace("</body>", CHECK_SCRIPT + "</body>"), encoding="utf-8")
    cmd = [chromium(), *FLAGS, f"--user-data-dir={profile_dir}", "--virtual-time-budget=10000", "--dump-dom",
           (report_dir / CHECK_PAGE).resolve().as_uri()]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout_s)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # helpers (zygote, crashpad) that outlive the browser
        except ProcessLookupError:
            pass
        proc.wait()
        deadline = time.monotonic() + 10
        while _session_processes(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _session_processes(proc.pid), "Chromium processes left behind"
    found = re.search(r'<pre id="render-check">(.*?)</pre>', out, re.S)
    assert found, f"the page's load event never ran (exit {proc.returncode}): {err[-2000:]}"
    return json.loads(html.unescape(found.group(1)))


def render_problems(result: dict) -> list[str]:
    """What did not render: tables with no visible body row, images not loaded or not shown."""
    problems = [f"table {t['id']!r} has no rendered row" for t in result["tables"] if t["rows"] == 0]
    problems += [f"image {i['src']!r} did not render" for i in result["images"]
                 if i["naturalWidth"] <= 0 or i["shownWidth"] <= 0]
    return problems

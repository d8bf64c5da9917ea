#!/usr/bin/env python3
"""Check that a report HTML is self-contained and renders in headless Chromium, and take a screenshot.

    python scripts/check_report_html.py REPORT_HTML OUT_PNG

Fails (exit status 1, one line per problem) when

* an <img> is not a data: URI, or its base64 PNG does not decode (chunk CRCs, zlib stream, pixel rows);
* anything else refers outside the file (src/href that is not a data: URI or a #fragment);
* in Chromium, with every host unresolvable, an image is incomplete or has no pixels, or a script error or
  failed load is reported.

Chromium loads an instrumented copy: a probe script placed first in <head> records errors and, on load, writes
what it saw into the DOM, which ``--dump-dom`` prints. The screenshot is of the original file, at the page's
full height. Needs the ``chromium`` binary (Debian: ``apt-get install -y --no-install-recommends chromium``),
or set CHROMIUM to another Chromium/Chrome binary. Standard library only.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from html.parser import HTMLParser
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
         "--hide-scrollbars", "--host-resolver-rules=MAP * ~NOTFOUND"]
WIDTH = 1280
MAX_HEIGHT = 16384  # Chromium's largest screenshot side
TIMEOUT_S = 120
PROBE = """<script>
window.__cmlErrors = [];
window.addEventListener("error", (event) => {
  const target = event.target;
  window.__cmlErrors.push(target && target !== window
    ? "failed to load " + (target.currentSrc || target.src || target.href || target.tagName)
    : "script error: " + event.message);
}, true);
window.addEventListener("load", () => {
  const broken = Array.from(document.images).filter((image) => !image.complete || image.naturalWidth === 0)
    .map((image) => image.alt || image.src.slice(0, 60));
  const out = document.createElement("pre");
  out.id = "cml-check";
  out.textContent = JSON.stringify({images: document.images.length, broken: broken,
    errors: window.__cmlErrors, height: document.documentElement.scrollHeight});
  document.body.appendChild(out);
});
</script>"""
_RESULT = re.compile(r'<pre id="cml-check">(.*?)</pre>', re.S)


class _References(HTMLParser):
    """Every <img> src and every other src/href in a page."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.others: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if tag == "img" and name == "src":
                self.images.append(value or "")
            elif name in ("src", "href") and value is not None:
                self.others.append(value)


def png_problem(data: bytes) -> str | None:
    """Why ``data`` is not a complete, decodable PNG, or None."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "not a PNG"
    position, idat, header = 8, b"", None
    while position + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[position:position + 8])
        body = data[position + 8:position + 8 + length]
        (crc,) = struct.unpack(">I", data[position + 8 + length:position + 12 + length] or b"\0\0\0\0")
        if len(body) != length or zlib.crc32(kind + body) != crc:
            return f"corrupt {kind.decode('latin-1')} chunk"
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
        position += 12 + length
    else:
        return "no IEND chunk"
    if header is None:
        return "no IHDR chunk"
    width, height, depth, colour, _, _, interlace = header
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(colour)
    if channels is None or interlace or not width or not height:
        return f"unexpected PNG header {header}"  # matplotlib writes non-interlaced grey/RGB(A)/palette PNGs
    try:
        pixels = zlib.decompress(idat)
    except zlib.error as error:
        return f"image data does not decompress: {error}"
    if len(pixels) != height * (1 + (width * channels * depth + 7) // 8):
        return "image data has the wrong size"
    return None


def static_problems(page: str) -> list[str]:
    references = _References()
    references.feed(page)
    problems = [] if references.images else ["no <img> in the page"]
    for number, source in enumerate(references.images, 1):
        match = re.fullmatch(r"data:image/png;base64,([A-Za-z0-9+/=\s]+)", source)
        if not match:
            problems.append(f"image {number} is not an embedded PNG: {source[:60]!r}")
            continue
        problem = png_problem(base64.b64decode(match.group(1), validate=False))
        if problem:
            problems.append(f"image {number}: {problem}")
    problems += [f"external reference: {value[:80]!r}" for value in references.others
                 if not value.startswith(("data:", "#"))]
    return problems


def chromium() -> str:
    binary = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not binary:
        sys.exit("check_report_html: no chromium binary (apt-get install -y --no-install-recommends chromium)")
    return binary


def run_chromium(binary: str, profile: Path, *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([binary, *FLAGS, f"--user-data-dir={profile}", *arguments], capture_output=True,
                          text=True, timeout=TIMEOUT_S, check=False)


def browser_check(page: str, binary: str, work: Path) -> tuple[list[str], int]:
    """Problems Chromium reports for ``page``, and the page's height in pixels."""
    probed = work / "probed.html"
    probed.write_text(page.replace("<head>", "<head>\n" + PROBE, 1), encoding="utf-8")
    done = run_chromium(binary, work / "profile", "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000",
                        "--dump-dom", probed.as_uri())
    found = _RESULT.search(done.stdout)
    if not found:
        return [f"Chromium printed no check result (exit {done.returncode}): {done.stderr.strip()[-500:]}"], 0
    result = json.loads(html.unescape(found.group(1)))
    problems = [f"image not rendered: {name}" for name in result["broken"]] + result["errors"]
    problems += [line.strip() for line in done.stderr.splitlines() if "Uncaught" in line]
    return problems, int(result["height"])


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    report, screenshot = Path(argv[0]).resolve(), Path(argv[1]).resolve()
    page = report.read_text(encoding="utf-8")
    problems = static_problems(page)
    binary = chromium()
    with tempfile.TemporaryDirectory(prefix="cml-html-check-") as temporary:
        work = Path(temporary)
        browser_problems, height = browser_check(page, binary, work)
        problems += browser_problems
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        shot = run_chromium(binary, work / "profile", f"--window-size={WIDTH},{min(max(height, 600), MAX_HEIGHT)}",
                            f"--screenshot={screenshot}", report.as_uri())
        if not screenshot.is_file():
            problems.append(f"no screenshot (exit {shot.returncode}): {shot.stderr.strip()[-500:]}")
    for problem in problems:
        print(f"check_report_html: {problem}", file=sys.stderr)
    if not problems:
        print(f"{report}: ok ({screenshot})")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

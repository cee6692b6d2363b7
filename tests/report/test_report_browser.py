"""The report in a real browser: headless Chromium renders report.html to a screenshot and the
test looks for what must be on it (the banner, the synthetic images' colour, the figures).

Skipped only when no Chromium is installed (Debian: apt-get install chromium); CI installs it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from reportfakes import MAGENTA, make_run

from meddistill.report.html import build_report
from meddistill.report.page import BANNER_COLOR

pytest.importorskip("matplotlib")

CHROMIUM = next(
    (p for p in (shutil.which("chromium"), shutil.which("chromium-browser")) if p), None
)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Chromium is not installed (Debian: apt-get install chromium); the real-browser "
    "test of the report needs it",
)
WIDTH, HEIGHT = 1200, 2000
MPL_BLUE = (31, 119, 180)  # matplotlib's first line colour (C0)
PAGE_BG = (246, 247, 249)


def screenshot(page: Path, out: Path, tmp: Path) -> np.ndarray:
    """Render `page` with headless Chromium (offline, no profile state) and return RGB pixels."""
    args = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        f"--user-data-dir={tmp / 'profile'}",
        f"--screenshot={out}",
        f"--window-size={WIDTH},{HEIGHT}",
        page.resolve().as_uri(),
    ]
    env = {**os.environ, "HOME": str(tmp)}
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    try:
        output, _ = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the browser and its helper processes, only ours
        proc.communicate()
        pytest.fail("Chromium did not finish the screenshot within 120 s")
    assert proc.returncode == 0 and out.is_file(), output.decode(errors="replace")[-2000:]
    with Image.open(out) as img:
        return np.asarray(img.convert("RGB")).astype(np.int16)


def near(arr: np.ndarray, colour: tuple[int, int, int], tol: int = 3) -> np.ndarray:
    return np.all(np.abs(arr - np.array(colour, dtype=np.int16)) <= tol, axis=2)


def hex_rgb(text: str) -> tuple[int, int, int]:
    return tuple(int(text[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


def test_report_renders_banner_images_and_figures(tmp_path: Path) -> None:
    page = build_report(make_run(tmp_path / "run"))
    arr = screenshot(page, tmp_path / "shot.png", tmp_path)
    assert arr.shape == (HEIGHT, WIDTH, 3)

    # The banner: full-width rows of its colour at the top, with the (white) title on it.
    banner = near(arr, hex_rgb(BANNER_COLOR), tol=2)
    edges = np.concatenate([banner[:, :20], banner[:, -200:]], axis=1)  # beside the title
    rows = edges.mean(axis=1) > 0.95
    assert rows[0], "the page does not start with the banner"
    bottom = int(np.argmin(rows))
    assert 60 <= bottom <= 200, f"banner height {bottom} px"
    title_px = int((arr[:bottom].min(axis=2) > 235).sum())
    assert title_px > 300, "no title text on the banner"

    # Not blank below the banner: sections, text, images.
    rest = arr[bottom:]
    drawn = ~(near(rest, PAGE_BG, tol=2) | near(rest, (255, 255, 255), tol=2))
    assert drawn.mean() > 0.03

    # The synthetic images of class 0 (solid colour, 2 images of 8 px shown 14x, 2 px padding
    # between them, also 14x) appear as two 112 px squares side by side, below the banner.
    magenta = near(arr, MAGENTA)
    ys, xs = np.nonzero(magenta)
    assert magenta.sum() >= 0.95 * 2 * 112 * 112, f"{magenta.sum()} px of the grid colour"
    assert ys.min() > bottom
    assert abs((ys.max() - ys.min() + 1) - 112) <= 2
    assert abs((xs.max() - xs.min() + 1) - (112 + 28 + 112)) <= 3
    gap = magenta[ys.min() : ys.max() + 1, xs.min() + 112 + 2 : xs.min() + 112 + 26]
    assert not gap.any(), "the white padding between the two images is missing"

    # The analysis figures (matplotlib lines) are drawn below the images.
    blue_y, _ = np.nonzero(near(arr, MPL_BLUE, tol=6))
    below = blue_y[blue_y > ys.max()]
    assert below.size > 200, "no figure lines below the image grids"

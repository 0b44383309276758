"""A real browser for the tests: Debian's headless Chromium renders a page (its DOM
after parsing, or a PNG screenshot), optionally inside a network namespace; and a
small PNG reader (zlib + the five PNG filters, numpy) to look at the screenshot."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import tempfile
import zlib
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def browser() -> str:
    """The Chromium binary; skips outside CI, fails in CI, when there is none."""
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    reason = "no headless Chromium (Debian package chromium)"
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def _run(url: str, args: list[str], netns: str | None, timeout: float) -> str:
    with tempfile.TemporaryDirectory(prefix="vp-chromium-") as profile:
        cmd = [browser(), "--headless", "--no-sandbox", "--disable-gpu",
               "--no-first-run", "--hide-scrollbars", f"--user-data-dir={profile}",
               *args, url]
        if netns is not None:
            cmd = ["ip", "netns", "exec", netns, *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              check=False)
    if proc.returncode != 0:
        raise AssertionError(f"chromium failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return proc.stdout


def dump_dom(url: str, netns: str | None = None, timeout: float = 60.0) -> str:
    """The page's DOM as Chromium parsed it (``--dump-dom``)."""
    return _run(url, ["--dump-dom"], netns, timeout)


def screenshot(url: str, out: Path, size: tuple[int, int] = (1600, 900),
               netns: str | None = None, timeout: float = 60.0) -> Path:
    """A PNG of the page at ``size`` (width, height)."""
    _run(url, [f"--screenshot={out}", f"--window-size={size[0]},{size[1]}"], netns, timeout)
    assert out.exists() and out.stat().st_size > 0, "chromium wrote no screenshot"
    return out


def read_png(path: Path) -> npt.NDArray[np.uint8]:
    """An 8-bit, non-interlaced RGB or RGBA PNG as an (height, width, 3) array."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, [], b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat.append(body)
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and colour in (2, 6) and interlace == 0, (depth, colour, interlace)
    bpp = 3 if colour == 2 else 4
    raw = np.frombuffer(zlib.decompress(b"".join(idat)), np.uint8)
    raw = raw.reshape(height, 1 + width * bpp)
    out = np.zeros((height, width * bpp), np.int32)
    prev = np.zeros(width * bpp, np.int32)
    for y in range(height):
        kind, line = raw[y, 0], raw[y, 1:].astype(np.int32)
        if kind == 0:
            cur = line
        elif kind == 2:
            cur = (line + prev) & 0xFF
        else:  # Sub, Average, Paeth depend on the left pixel: byte by byte
            cur = np.zeros_like(line)
            for x in range(line.size):
                left = cur[x - bpp] if x >= bpp else 0
                up, ul = prev[x], (prev[x - bpp] if x >= bpp else 0)
                if kind == 1:
                    pred = left
                elif kind == 3:
                    pred = (left + up) // 2
                else:
                    p = left + up - ul
                    pa, pb, pc = abs(p - left), abs(p - up), abs(p - ul)
                    pred = left if pa <= pb and pa <= pc else (up if pb <= pc else ul)
                cur[x] = (line[x] + pred) & 0xFF
        out[y], prev = cur, cur
    return out.reshape(height, width, bpp)[:, :, :3].astype(np.uint8)


def colour_bands(image: npt.NDArray[np.uint8], rgb: tuple[int, int, int],
                 min_pixels: int = 200, min_height: int = 4) -> int:
    """How many horizontal bands (runs of at least ``min_height`` pixel rows, each with
    at least ``min_pixels`` pixels of exactly ``rgb``) the image shows: one per table
    row painted that colour."""
    rows = (image == np.array(rgb, np.uint8)).all(axis=2).sum(axis=1) >= min_pixels
    bands, run = 0, 0
    for hit in [*rows.tolist(), False]:
        if hit:
            run += 1
        else:
            bands += run >= min_height
            run = 0
    return bands

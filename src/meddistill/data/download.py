"""Fetch a file from its official URL with an md5 check and an atomic write.

The bytes stream into a temporary file beside the target, hashed on the way; only a complete
download with the expected md5 is renamed into place, so an interrupted or tampered download
never leaves a file that a later load would trust.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from meddistill.errors import DownloadError
from meddistill.utils import atomic_path

CHUNK = 1 << 20


def download_file(
    url: str,
    dest: str | os.PathLike[str],
    md5: str | None = None,
    *,
    timeout: float = 60.0,
    progress: bool = True,
) -> str:
    """Download `url` to `dest` (atomically) and return the md5 of the bytes written.

    Raises DownloadError when the transfer fails or the md5 differs from `md5`; in both cases
    nothing is left at `dest` (an existing file there is untouched).
    """
    target = Path(dest)
    digest = hashlib.md5()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp:
            with urllib.request.urlopen(url, timeout=timeout) as resp, open(tmp, "wb") as fh:
                total = resp.headers.get("Content-Length")
                bar = tqdm(
                    total=int(total) if total and total.isdigit() else None,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=target.name,
                    disable=not progress,
                    leave=False,
                )
                with bar:
                    while block := resp.read(CHUNK):
                        fh.write(block)
                        digest.update(block)
                        bar.update(len(block))
            got = digest.hexdigest()
            if md5 is not None and got != md5:
                raise DownloadError(
                    f"download of {url} has md5 {got}, expected {md5}; nothing was saved to "
                    f"{target}; retry later or download the file by hand and place it there"
                )
    except DownloadError:
        raise
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise DownloadError(
            f"could not download {url} to {target}: {reason}; check the network, or download "
            f"the file by hand and place it at {target}"
        ) from exc
    return got

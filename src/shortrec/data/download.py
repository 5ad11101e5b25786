"""Fetch the official KuaiRec 2.0 archive, verify it and unpack it.

The archive is 432 MB, so an interrupted transfer resumes (HTTP Range into `KuaiRec.zip.part`)
instead of starting over, and a verified archive is never fetched twice. Several mirrors are
tried in turn; the md5 published with the release decides whether a download is the real one.
Another md5 and size can be given (a mirror's repack, a future release). An archive the user
placed in the destination is verified and used; one that does not verify is reported, never
overwritten.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from shortrec import __version__

ARCHIVE_NAME = "KuaiRec.zip"
ARCHIVE_SIZE = 431_964_858
ARCHIVE_MD5 = "261550d472c48eff4990fb13c0e5bcf7"
RELEASE_DIR_NAME = "KuaiRec 2.0"
# The Zenodo record of KuaiRec 2.0 first, then the direct `wget` hosts that the official README
# (github.com/chongminggao/KuaiRec) has listed over time. Those hosts use self-signed TLS
# certificates, so with certificate checks on (as here) they are only reached when the system
# trusts them; the md5 check guards the content whichever host serves it.
KUAIREC_URLS: tuple[str, ...] = (
    "https://zenodo.org/records/18164998/files/KuaiRec.zip?download=1",
    "https://nas.chongminggao.top:4430/datasets/KuaiRec.zip",
    "https://chongming.myds.me:61364/data/KuaiRec.zip",
)
# Pages for a manual download (a browser is needed): the Zenodo record, the project site
# (which links the Google Drive and USTC Drive copies).
MANUAL_DOWNLOAD_PAGES = ("https://zenodo.org/records/18164998", "https://kuairec.com/")

_CHUNK = 1 << 20
_TIMEOUT_S = 60


class DownloadError(RuntimeError):
    """The archive could not be fetched or did not verify."""


class _WrongSize(Exception):
    """The server announces a file of another size than the archive we want."""


@dataclass(frozen=True)
class DownloadResult:
    archive: Path
    data_dir: Path  # DEST/KuaiRec 2.0/data, holding the CSVs
    downloaded: bool  # False when a verified archive was already there
    extracted: bool  # False when the release folder was already there


def md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def check_expected(size: int | None, md5: str) -> None:
    """A usable expectation: an md5 of 32 hex digits and, if given, a positive size."""
    if not re.fullmatch(r"[0-9a-f]{32}", md5):
        raise DownloadError(f"md5 {md5!r}: expected 32 hexadecimal digits (lower case)")
    if size is not None and size <= 0:
        raise DownloadError(f"size {size}: expected a positive number of bytes")


def _mismatch(path: Path, size: int | None, md5: str) -> str | None:
    """Why `path` is not the expected archive, or None if it is (the size, when known, is
    checked first: it costs nothing, and the md5 of 432 MB costs a second)."""
    got_size = path.stat().st_size
    expected = f"md5 {md5}" + (f" ({size:,} bytes)" if size is not None else "")
    if size is not None and got_size != size:
        return f"expected {expected}, found {got_size:,} bytes"
    actual = md5_of(path)
    if actual != md5:
        return f"expected {expected}, got md5 {actual} ({got_size:,} bytes)"
    return None


def _fetch(url: str, part: Path, size: int | None, progress: bool) -> None:
    """Fetch `url` into `part`, resuming from the bytes already there when the server allows."""
    have = part.stat().st_size if part.exists() else 0
    if size is not None and have > size:  # not a prefix of the archive we want
        part.unlink()
        have = 0
    if size is not None and have == size:
        return
    request = urllib.request.Request(url, headers={"User-Agent": f"shortrec/{__version__}"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=_TIMEOUT_S)
    except urllib.error.HTTPError as error:
        if error.code == 416 and have:  # our range starts past the end: start over
            part.unlink()
            return _fetch(url, part, size, progress)
        raise
    with response:
        resumed = have > 0 and response.status == 206
        if resumed and not response.headers.get("Content-Range", "").startswith(f"bytes {have}-"):
            response.close()  # a range we did not ask for: start over
            part.unlink()
            return _fetch(url, part, size, progress)
        if not resumed:  # no Range sent, or the server ignored it and sends the whole file
            have = 0
        announced = _announced_size(response, have)
        if announced is not None and size is not None and announced != size:
            raise _WrongSize(f"serves a file of {announced:,} bytes, expected {size:,}")
        total = size if size is not None else announced
        mode = "ab" if resumed else "wb"
        with (
            open(part, mode) as out,
            tqdm(
                total=total,
                initial=have,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=ARCHIVE_NAME,
                disable=not progress,
            ) as bar,
        ):
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                bar.update(len(chunk))
    got = part.stat().st_size
    if total is not None and got < total:  # closed early; the .part is kept for a resume
        raise ConnectionError(f"connection closed after {got:,} of {total:,} bytes")


def _announced_size(response: http.client.HTTPResponse, offset: int) -> int | None:
    """Total size of the file as the server states it, if it does."""
    content_range = response.headers.get("Content-Range", "")
    if "/" in content_range and content_range.rsplit("/", 1)[1].isdigit():
        return int(content_range.rsplit("/", 1)[1])
    length = response.headers.get("Content-Length")
    return offset + int(length) if length and length.isdigit() else None


def _describe(url: str, error: BaseException) -> str:
    if isinstance(error, urllib.error.HTTPError):
        return f"{url}: HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        return f"{url}: cannot connect ({error.reason})"
    return f"{url}: transfer interrupted ({error.__class__.__name__}: {error})"


def download_archive(
    dest: str | Path,
    urls: tuple[str, ...] | list[str] = KUAIREC_URLS,
    size: int | None = ARCHIVE_SIZE,
    md5: str = ARCHIVE_MD5,
    progress: bool = False,
) -> tuple[Path, bool]:
    """Put a verified archive at DEST/KuaiRec.zip; returns (path, whether it was downloaded).

    An archive already at DEST/KuaiRec.zip (fetched before, or placed there by hand) is
    verified: used if it matches `md5` (and `size`, unless None), reported and left alone if
    not. Otherwise mirrors are tried in order; a partial `.part` file is resumed from whichever
    mirror answers, and a download whose md5 is wrong is deleted and the next mirror tried.
    """
    check_expected(size, md5)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    archive = dest / ARCHIVE_NAME
    if archive.is_file():
        wrong = _mismatch(archive, size, md5)
        if wrong is None:
            return archive, False
        raise DownloadError(
            f"{archive} is already there but is not the expected archive: {wrong}. If it is "
            "the release you want from another source, run again with `--md5` and `--size` "
            "set to its own; otherwise delete or move it and run again to download"
        )
    part = dest / f"{ARCHIVE_NAME}.part"
    failures: list[str] = []
    reached_any = False
    for url in urls:
        try:
            _fetch(url, part, size, progress)
        except _WrongSize as error:
            reached_any = True
            failures.append(f"{url}: {error}; not this release?")
            continue
        except (OSError, http.client.HTTPException) as error:
            unreachable = isinstance(error, urllib.error.URLError) and not isinstance(
                error, urllib.error.HTTPError
            )
            reached_any |= not unreachable
            failures.append(_describe(url, error))
            continue
        reached_any = True
        wrong = _mismatch(part, size, md5)
        if wrong is None:
            os.replace(part, archive)
            return archive, True
        part.unlink()
        failures.append(f"{url}: checksum mismatch: {wrong}; the bad download was deleted")
    manual = (
        f"download {ARCHIVE_NAME} manually (from {' or '.join(MANUAL_DOWNLOAD_PAGES)}) "
        f"into {dest} and run this command again"
    )
    if part.exists():
        manual = (
            f"the partial download {part} was kept ({part.stat().st_size:,} bytes); "
            f"run this command again to resume, or {manual}"
        )
    headline = "download failed" if reached_any else "could not reach any mirror (offline?)"
    raise DownloadError(f"{headline}: " + "; ".join(failures) + f". To continue, {manual}")


def extract_release(archive: Path, dest: Path, force: bool = False) -> tuple[Path, bool]:
    """Unpack so that DEST/KuaiRec 2.0/data/*.csv exist; returns (data dir, whether unpacked).

    The archive is unpacked into a temporary folder inside DEST and renamed into place, so an
    interrupted unpack never leaves a half-filled release folder behind. An existing release
    folder is kept unless `force`.
    """
    release = dest / RELEASE_DIR_NAME
    data_dir = release / "data"
    if any(data_dir.glob("*.csv")) and not force:
        return data_dir, False
    with tempfile.TemporaryDirectory(prefix=".unpack-", dir=dest) as scratch:
        try:
            with zipfile.ZipFile(archive) as bundle:
                bundle.extractall(scratch)
        except zipfile.BadZipFile as error:
            raise DownloadError(f"{archive}: not a valid zip archive ({error})") from error
        unpacked = Path(scratch) / RELEASE_DIR_NAME
        if not any((unpacked / "data").glob("*.csv")):
            raise DownloadError(
                f"{archive}: expected '{RELEASE_DIR_NAME}/data/*.csv' inside the archive"
            )
        if release.exists():  # move the old folder aside; it is deleted with the scratch dir
            os.replace(release, Path(scratch) / "previous")
        os.replace(unpacked, release)
    return data_dir, True


def download_kuairec(
    dest: str | Path,
    urls: tuple[str, ...] | list[str] = KUAIREC_URLS,
    size: int | None = ARCHIVE_SIZE,
    md5: str = ARCHIVE_MD5,
    progress: bool = False,
) -> DownloadResult:
    """Download (or reuse) the verified KuaiRec 2.0 archive in DEST and unpack it there."""
    dest = Path(dest)
    archive, downloaded = download_archive(dest, urls, size, md5, progress)
    data_dir, extracted = extract_release(archive, dest, force=downloaded)
    return DownloadResult(archive, data_dir, downloaded, extracted)

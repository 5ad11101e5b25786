"""Downloading the archive from a local HTTP server: full, resumed, mirrors, and failures."""

from __future__ import annotations

import hashlib
import io
import socket
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from test_data_read import write_release
from typer.testing import CliRunner

from shortrec.cli import app
from shortrec.data.download import ARCHIVE_NAME, DownloadError, download_kuairec
from shortrec.data.prepare import prepare


@dataclass
class Mirror:
    """What the local server serves and what it has seen."""

    archive: bytes
    ignore_range: bool = False
    cut_after: int | None = None  # drop the connection after this many body bytes
    missing: set[str] = field(default_factory=set)  # paths answered with 404
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range)


def make_handler(mirror: Mirror) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            asked = self.headers.get("Range")
            mirror.requests.append((self.path, asked))
            if self.path in mirror.missing:
                self.send_error(404, "Not Found")
                return
            body, start = mirror.archive, 0
            if asked and not mirror.ignore_range:
                start = int(asked.removeprefix("bytes=").split("-")[0])
                self.send_response(206)
                end = len(body) - 1
                self.send_header("Content-Range", f"bytes {start}-{end}/{len(body)}")
            else:
                self.send_response(200)
            payload = body[start:]
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if mirror.cut_after is not None:
                payload = payload[: mirror.cut_after]
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    return Handler


def fabricated_archive(tmp_path: Path) -> bytes:
    release = write_release(tmp_path / "fabricated" / "KuaiRec 2.0" / "data")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as bundle:
        for csv in sorted(release.iterdir()):
            bundle.write(csv, f"KuaiRec 2.0/data/{csv.name}")
    # Pad with stored noise so the archive is big enough to be cut mid-transfer.
    with zipfile.ZipFile(buffer, "a", zipfile.ZIP_STORED) as bundle:
        bundle.writestr("KuaiRec 2.0/padding.bin", bytes(range(256)) * 2048)
    return buffer.getvalue()


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[tuple[Mirror, str]]:
    served = Mirror(fabricated_archive(tmp_path))
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(served))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def checks(archive: bytes) -> dict[str, object]:
    return {"size": len(archive), "md5": hashlib.md5(archive).hexdigest()}


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/{ARCHIVE_NAME}"


def test_full_download_unpacks_and_is_idempotent(tmp_path: Path, mirror) -> None:
    served, base = mirror
    dest = tmp_path / "dest"
    result = download_kuairec(dest, [f"{base}/{ARCHIVE_NAME}"], **checks(served.archive))
    assert result.downloaded and result.extracted
    assert (dest / ARCHIVE_NAME).read_bytes() == served.archive
    assert (dest / "KuaiRec 2.0" / "data" / "big_matrix.csv").is_file()
    assert not (dest / f"{ARCHIVE_NAME}.part").exists()
    assert [p.name for p in dest.iterdir() if p.name.startswith(".")] == []

    again = download_kuairec(dest, [f"{base}/{ARCHIVE_NAME}"], **checks(served.archive))
    assert not again.downloaded and not again.extracted
    assert len(served.requests) == 1  # nothing fetched the second time
    assert prepare(dest, tmp_path / "cache").prepared  # the unpacked release prepares


def test_resume_sends_a_range_request(tmp_path: Path, mirror) -> None:
    served, base = mirror
    dest = tmp_path / "dest"
    dest.mkdir()
    half = len(served.archive) // 2
    (dest / f"{ARCHIVE_NAME}.part").write_bytes(served.archive[:half])
    result = download_kuairec(dest, [f"{base}/{ARCHIVE_NAME}"], **checks(served.archive))
    assert served.requests == [(f"/{ARCHIVE_NAME}", f"bytes={half}-")]
    assert result.archive.read_bytes() == served.archive


def test_server_ignoring_range_restarts_cleanly(tmp_path: Path, mirror) -> None:
    served, base = mirror
    served.ignore_range = True
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / f"{ARCHIVE_NAME}.part").write_bytes(served.archive[:1000])
    result = download_kuairec(dest, [f"{base}/{ARCHIVE_NAME}"], **checks(served.archive))
    assert served.requests[0][1] == "bytes=1000-"
    assert result.archive.read_bytes() == served.archive


def test_interrupted_transfer_keeps_the_part_file_and_resumes(tmp_path: Path, mirror) -> None:
    served, base = mirror
    served.cut_after = 100_000
    dest, url = tmp_path / "dest", f"{base}/{ARCHIVE_NAME}"
    with pytest.raises(DownloadError, match="run this command again to resume"):
        download_kuairec(dest, [url], **checks(served.archive))
    assert (dest / f"{ARCHIVE_NAME}.part").stat().st_size == 100_000
    served.cut_after = None
    download_kuairec(dest, [url], **checks(served.archive))
    assert served.requests[-1][1] == "bytes=100000-"
    assert (dest / ARCHIVE_NAME).read_bytes() == served.archive


def test_checksum_mismatch_names_both_md5s_and_removes_the_file(tmp_path: Path, mirror) -> None:
    served, base = mirror
    dest = tmp_path / "dest"
    wrong = "0" * 32
    with pytest.raises(DownloadError) as caught:
        download_kuairec(dest, [f"{base}/{ARCHIVE_NAME}"], size=len(served.archive), md5=wrong)
    message = str(caught.value)
    assert f"expected md5 {wrong}" in message
    assert f"got md5 {hashlib.md5(served.archive).hexdigest()}" in message
    assert "deleted" in message
    assert not (dest / ARCHIVE_NAME).exists() and not (dest / f"{ARCHIVE_NAME}.part").exists()


def test_a_mirror_serving_another_file_size_is_skipped(tmp_path: Path, mirror) -> None:
    served, base = mirror
    expected = len(served.archive) + 5
    with pytest.raises(DownloadError, match=f"expected {expected:,}"):
        download_kuairec(tmp_path / "dest", [f"{base}/{ARCHIVE_NAME}"], size=expected, md5="0" * 32)
    assert not (tmp_path / "dest" / f"{ARCHIVE_NAME}.part").exists()


def test_offline_error_names_the_url_and_the_manual_route(tmp_path: Path) -> None:
    url = closed_port_url()
    with pytest.raises(DownloadError) as caught:
        download_kuairec(tmp_path / "dest", [url], size=10, md5="0" * 32)
    message = str(caught.value)
    assert "could not reach any mirror" in message and url in message
    assert "manually" in message and str(tmp_path / "dest") in message


def test_falls_back_to_the_next_mirror(tmp_path: Path, mirror) -> None:
    served, base = mirror
    served.missing = {"/gone/KuaiRec.zip"}
    urls = [closed_port_url(), f"{base}/gone/KuaiRec.zip", f"{base}/{ARCHIVE_NAME}"]
    result = download_kuairec(tmp_path / "dest", urls, **checks(served.archive))
    assert result.archive.read_bytes() == served.archive
    assert [path for path, _ in served.requests] == ["/gone/KuaiRec.zip", f"/{ARCHIVE_NAME}"]


def test_http_error_is_reported_with_its_status(tmp_path: Path, mirror) -> None:
    served, base = mirror
    served.missing = {"/nothing.zip"}
    with pytest.raises(DownloadError, match=r"nothing.zip: HTTP 404"):
        download_kuairec(tmp_path / "dest", [f"{base}/nothing.zip"], **checks(served.archive))


def test_an_archive_placed_by_hand_is_verified_and_used(tmp_path: Path, mirror) -> None:
    served, base = mirror
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / ARCHIVE_NAME).write_bytes(served.archive)
    result = download_kuairec(dest, [f"{base}/{ARCHIVE_NAME}"], **checks(served.archive))
    assert not result.downloaded and result.extracted
    assert served.requests == []  # nothing fetched
    assert (result.data_dir / "big_matrix.csv").is_file()


def test_an_archive_that_does_not_verify_is_reported_and_kept(tmp_path: Path, mirror) -> None:
    served, base = mirror
    dest = tmp_path / "dest"
    dest.mkdir()
    buffer = io.BytesIO(served.archive)
    with zipfile.ZipFile(buffer, "a") as bundle:
        bundle.comment = b"repacked by a mirror"
    placed = buffer.getvalue()
    (dest / ARCHIVE_NAME).write_bytes(placed)
    with pytest.raises(DownloadError) as caught:
        download_kuairec(dest, [f"{base}/{ARCHIVE_NAME}"], **checks(served.archive))
    message = str(caught.value)
    assert "is already there but is not the expected archive" in message
    assert f"found {len(placed):,} bytes" in message and "--md5" in message
    assert (dest / ARCHIVE_NAME).read_bytes() == placed  # the user's file is never overwritten
    assert served.requests == []
    # With its own checksum (a mirror's repack, another release) the same file is accepted.
    result = download_kuairec(dest, [f"{base}/{ARCHIVE_NAME}"], **checks(placed))
    assert not result.downloaded


def test_md5_alone_checks_the_content_without_a_size(tmp_path: Path, mirror) -> None:
    served, base = mirror
    md5 = hashlib.md5(served.archive).hexdigest()
    result = download_kuairec(tmp_path / "dest", [f"{base}/{ARCHIVE_NAME}"], size=None, md5=md5)
    assert result.downloaded and result.archive.read_bytes() == served.archive
    with pytest.raises(DownloadError, match="expected 32 hexadecimal digits"):
        download_kuairec(tmp_path / "other", [f"{base}/{ARCHIVE_NAME}"], size=None, md5="abc")


def test_cli_download_with_md5_and_size_for_a_mirror(tmp_path: Path, mirror) -> None:
    served, base = mirror
    runner = CliRunner()
    args = ["data", "download", "--dest", str(tmp_path / "dest"), "--url", f"{base}/m.zip",
            "--no-progress", "--md5", hashlib.md5(served.archive).hexdigest()]  # fmt: skip
    result = runner.invoke(app, [*args, "--size", str(len(served.archive))])
    assert result.exit_code == 0, result.output
    assert "downloaded and verified" in result.output
    assert (tmp_path / "dest" / "KuaiRec 2.0" / "data" / "big_matrix.csv").is_file()
    again = runner.invoke(app, [*args, "--size", str(len(served.archive) + 1)])
    assert again.exit_code == 2 and "is already there" in again.output, again.output
    assert "Traceback" not in again.output


@pytest.mark.slow
def test_cli_download_offline_is_a_clean_error(tmp_path: Path) -> None:
    url = closed_port_url()
    result = CliRunner().invoke(
        app, ["data", "download", "--dest", str(tmp_path), "--url", url, "--no-progress"]
    )
    assert result.exit_code == 2
    assert url in result.output and "Traceback" not in result.output

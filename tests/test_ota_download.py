"""Package downloads against a real http.server on a free loopback port that can truncate, stall, ignore
ranges or change the file between tries."""
import os
import time

import pytest

from edge.ota import OtaError
from edge.ota.download import Download
from ota_helpers import FileServer


@pytest.fixture
def served(tmp_path):
    folder = tmp_path / "www"
    folder.mkdir()
    data = os.urandom(700 * 1024)
    (folder / "pkg.tar").write_bytes(data)
    server = FileServer(folder)
    yield server, data, str(folder / "pkg.tar")
    server.close()


def download(server, tmp_path, data=None, **kw):
    kw.setdefault("retry_delay_s", 0.05)
    kw.setdefault("timeout_s", 5)
    if data is not None:
        kw.setdefault("size", len(data))
        kw.setdefault("sha256", __import__("hashlib").sha256(data).hexdigest())
    return Download(server.url("pkg.tar"), str(tmp_path / "dl" / "pkg.tar"), **kw)


@pytest.fixture(autouse=True)
def dl_dir(tmp_path):
    (tmp_path / "dl").mkdir()


def test_whole_file_with_size_and_sha256(served, tmp_path):
    server, data, _ = served
    seen = []
    path = download(server, tmp_path, data, progress=lambda done, total: seen.append((done, total))).run()
    assert open(path, "rb").read() == data
    assert seen[-1] == (len(data), len(data))
    assert server.requests[0][1] is None  # no Range on a fresh start
    assert not os.path.exists(path + ".part")


def test_truncated_download_is_resumed_with_range_and_if_range(served, tmp_path):
    server, data, _ = served
    server.truncate_once = 300 * 1024
    d = download(server, tmp_path, data)
    path = d.run()
    assert open(path, "rb").read() == data
    assert d.resumed_from == [300 * 1024]
    path_, rng, if_range = server.requests[-1]
    assert rng == "bytes=%d-" % (300 * 1024) and if_range and if_range.startswith('"')


def test_a_stalled_server_is_given_up_then_resumed_later(served, tmp_path):
    server, data, _ = served
    server.stall_s = 3.0
    d = download(server, tmp_path, data, timeout_s=0.5, retries=1)
    start = time.monotonic()
    with pytest.raises(OtaError) as err:
        d.run()
    assert err.value.code == "stalled" and "no data for" in str(err.value)
    assert time.monotonic() - start < 2.9  # gave up on the timeout, not when the server woke up
    part = str(tmp_path / "dl" / "pkg.tar.part")
    kept = os.path.getsize(part)
    assert 0 < kept < len(data)  # what arrived is kept for the next try
    server.stall_s = 0.0
    d = download(server, tmp_path, data)
    assert open(d.run(), "rb").read() == data
    assert d.resumed_from == [kept]


def test_a_file_changed_on_the_server_is_fetched_whole_not_spliced(served, tmp_path):
    server, data, path = served
    server.truncate_once = 200 * 1024
    with pytest.raises(OtaError):
        download(server, tmp_path, size=len(data), retries=0).run()
    new = os.urandom(len(data))
    with open(path, "wb") as f:
        f.write(new)
    d = download(server, tmp_path, new)
    assert open(d.run(), "rb").read() == new
    assert server.requests[-1][2] is not None and d.resumed_from == []  # If-Range sent, whole file came back


def test_a_server_ignoring_ranges_restarts_from_zero(served, tmp_path):
    server, data, _ = served
    server.truncate_once = 100 * 1024
    server.ignore_range = True
    d = download(server, tmp_path, data)
    assert open(d.run(), "rb").read() == data and d.resumed_from == []


def test_wrong_sha256_is_refused_and_the_file_removed(served, tmp_path):
    server, data, _ = served
    with pytest.raises(OtaError) as err:
        download(server, tmp_path, size=len(data), sha256="0" * 64).run()
    assert err.value.code == "sha256_mismatch"
    assert os.listdir(str(tmp_path / "dl")) == []
    assert len(server.requests) == 1  # not fetched again: the same bytes would come back


def test_size_cap_before_and_during_the_download(served, tmp_path):
    server, data, _ = served
    with pytest.raises(OtaError) as err:
        download(server, tmp_path, data, max_bytes=1024).run()
    assert err.value.code == "too_large" and server.requests == []  # refused before asking
    with pytest.raises(OtaError) as err:
        download(server, tmp_path, max_bytes=64 * 1024).run()  # size unknown: the server's length decides
    assert err.value.code == "too_large"
    with pytest.raises(OtaError) as err:
        download(server, tmp_path, size=len(data) - 10).run()  # the command's size is not the server's
    assert err.value.code == "size_mismatch"


def test_disk_space_is_checked_first(served, tmp_path):
    server, _, _ = served
    with pytest.raises(OtaError) as err:
        download(server, tmp_path, size=1 << 50).run()
    assert err.value.code == "no_space" and "MB free" in str(err.value) and server.requests == []


def test_http_errors_and_bad_urls(served, tmp_path):
    server, _, _ = served
    with pytest.raises(OtaError) as err:
        Download(server.url("missing.tar"), str(tmp_path / "dl" / "x")).run()
    assert err.value.code == "http_error" and "404" in str(err.value)
    with pytest.raises(OtaError) as err:
        Download("ftp://example.invalid/x", str(tmp_path / "dl" / "x")).run()
    assert err.value.code == "bad_url"
    from helpers import free_port

    with pytest.raises(OtaError) as err:
        Download("http://127.0.0.1:%d/x" % free_port(), str(tmp_path / "dl" / "x"), retries=1,
                 retry_delay_s=0.01).run()
    assert err.value.code == "unreachable"


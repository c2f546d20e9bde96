"""Fetching pinned archives runs nothing from them, refuses what differs from the pin, honours pip's index."""
import os
import subprocess
import sys
import tarfile

import pytest

from pipeline.core import fetch as fetch_module
from pipeline.core.errors import StageError
from pipeline.core.fetch import Archive, _digest, fetch, pip_options
from tests.security.conftest import add_bytes, make_index, sha256

WORDS = b"the words we came for\n"


def hostile_sdist(tmp_path, marker):
    """An sdist whose build backend (in the archive itself, so no setuptools is needed) and
    setup.py write ``marker`` as soon as anything prepares its metadata."""
    path = tmp_path / "files" / "evil_pkg-1.0.tar.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = f"import pathlib\npathlib.Path({str(marker)!r}).write_text('the archive ran code')\n"
    pyproject = b'[build-system]\nrequires = []\nbuild-backend = "backend"\nbackend-path = ["."]\n'
    pkg_info = b"Metadata-Version: 2.1\nName: evil-pkg\nVersion: 1.0\n"
    with tarfile.open(path, "w:gz") as tf:
        add_bytes(tf, "evil_pkg-1.0/pyproject.toml", pyproject)
        add_bytes(tf, "evil_pkg-1.0/backend.py", payload.encode())
        add_bytes(tf, "evil_pkg-1.0/setup.py", payload.encode())
        add_bytes(tf, "evil_pkg-1.0/PKG-INFO", pkg_info)
        add_bytes(tf, "evil_pkg-1.0/data/words.txt", WORDS)
    return path


def pinned(path, members=("evil_pkg-1.0/data/*.txt",), data=None):
    return Archive("evil-pkg==1.0", path.name, sha256(path), members,
                   _digest(data or {"evil_pkg-1.0/data/words.txt": WORDS}))


def test_the_planted_setup_py_is_live_under_pip_download(tmp_path, only_index):
    # The control: pip download (what fetch used to run) executes the planted setup.py.
    marker = tmp_path / "marker"
    index = make_index(tmp_path / "index", {"evil-pkg": [hostile_sdist(tmp_path, marker)]})
    only_index(index.as_uri())
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary=:all:",
                    "--quiet", "--dest", str(tmp_path / "d"), "evil-pkg==1.0"], capture_output=True, text=True)
    assert marker.read_text() == "the archive ran code"


def test_fetch_never_runs_the_planted_build_backend(tmp_path, only_index):
    marker = tmp_path / "marker"
    sdist = hostile_sdist(tmp_path, marker)
    only_index(make_index(tmp_path / "index", {"evil-pkg": [sdist]}).as_uri())
    members = fetch(pinned(sdist), tmp_path / "cache")
    assert {k: p.read_bytes() for k, p in members.items()} == {"evil_pkg-1.0/data/words.txt": WORDS}
    assert not marker.exists()
    assert (tmp_path / "cache" / "downloads" / sdist.name).read_bytes() == sdist.read_bytes()


def test_an_archive_that_differs_from_its_pin_is_never_opened(tmp_path, only_index, monkeypatch):
    sdist = hostile_sdist(tmp_path, tmp_path / "marker")
    archive = pinned(sdist)
    sdist.write_bytes(sdist.read_bytes() + b"\0")  # one byte more than what was pinned
    # The index claims the pinned digest (a lying mirror, or a file changed in transit).
    only_index(make_index(tmp_path / "index", {"evil-pkg": [sdist]}, stated={sdist.name: archive.file_sha256}).as_uri())
    monkeypatch.setattr(fetch_module, "extract", lambda *a: pytest.fail("opened an unverified archive"))
    with pytest.raises(StageError, match=rf"downloaded file has sha256 {sha256(sdist)}, the pin is {archive.file_sha256}"):
        fetch(archive, tmp_path / "cache")
    assert list((tmp_path / "cache" / "downloads").iterdir()) == []  # no partial file left behind


def test_a_mirror_stating_another_digest_is_skipped_for_the_next_index(tmp_path, only_index):
    sdist = hostile_sdist(tmp_path, tmp_path / "marker")
    bad = make_index(tmp_path / "bad", {"evil-pkg": [sdist]}, stated={sdist.name: "f" * 64})
    good = make_index(tmp_path / "good", {"evil-pkg": [sdist]})
    only_index(bad.as_uri(), good.as_uri())
    assert list(fetch(pinned(sdist), tmp_path / "cache")) == ["evil_pkg-1.0/data/words.txt"]
    only_index(bad.as_uri())
    with pytest.raises(StageError, match=f"the index states sha256 {'f' * 64}"):
        fetch(pinned(sdist), tmp_path / "cache2")


def test_a_file_on_no_index_names_every_index_searched(tmp_path, only_index):
    sdist = hostile_sdist(tmp_path, tmp_path / "marker")
    empty = tmp_path / "empty"
    empty.mkdir()
    only_index(empty.as_uri())
    with pytest.raises(StageError, match=rf"evil_pkg-1.0.tar.gz is on none of the indexes searched \({empty.as_uri()}\)"):
        fetch(pinned(sdist), tmp_path / "cache")


def test_index_comes_from_pip_configuration_files(tmp_path, monkeypatch):
    sdist = hostile_sdist(tmp_path, tmp_path / "marker")
    index = make_index(tmp_path / "mirror", {"evil-pkg": [sdist]})
    conf = tmp_path / "pip.conf"
    conf.write_text(f"[global]\nindex-url = {index.as_uri()}\nfind-links =\n")
    for var in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_NO_INDEX"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PIP_CONFIG_FILE", str(conf))
    assert pip_options()["index_url"] == index.as_uri()
    assert list(fetch(pinned(sdist), tmp_path / "cache")) == ["evil_pkg-1.0/data/words.txt"]


def test_find_links_folder_is_searched_like_pip(tmp_path, only_index, monkeypatch):
    sdist = hostile_sdist(tmp_path, tmp_path / "marker")
    empty = tmp_path / "empty"
    empty.mkdir()
    only_index(empty.as_uri())
    monkeypatch.setenv("PIP_FIND_LINKS", str(sdist.parent))
    assert list(fetch(pinned(sdist), tmp_path / "cache")) == ["evil_pkg-1.0/data/words.txt"]


def test_cached_download_is_reused_offline_and_a_truncated_one_is_fetched_again(tmp_path, only_index):
    sdist = hostile_sdist(tmp_path, tmp_path / "marker")
    archive = pinned(sdist)
    only_index(make_index(tmp_path / "index", {"evil-pkg": [sdist]}).as_uri())
    cache = tmp_path / "cache"
    fetch(archive, cache)
    members = cache / "evil-pkg-1.0" / "members"
    (members / "evil_pkg-1.0" / "data" / "words.txt").write_bytes(b"tampered")  # members no longer match
    only_index((tmp_path / "nowhere").as_uri())
    assert fetch(archive, cache)["evil_pkg-1.0/data/words.txt"].read_bytes() == WORDS
    download = cache / "downloads" / sdist.name
    download.write_bytes(download.read_bytes()[:100])  # a download cut short
    (members / "evil_pkg-1.0" / "data" / "words.txt").unlink()
    with pytest.raises(StageError, match="on none of the indexes"):
        fetch(archive, cache)  # the truncated file is not trusted, and the index is gone
    only_index(make_index(tmp_path / "index", {"evil-pkg": [sdist]}).as_uri())
    assert fetch(archive, cache)["evil_pkg-1.0/data/words.txt"].read_bytes() == WORDS
    assert sorted(os.listdir(cache / "evil-pkg-1.0")) == ["members"]  # no temporary folders left


def test_members_that_differ_from_their_pin_are_refused(tmp_path, only_index):
    sdist = hostile_sdist(tmp_path, tmp_path / "marker")
    only_index(make_index(tmp_path / "index", {"evil-pkg": [sdist]}).as_uri())
    archive = pinned(sdist, data={"evil_pkg-1.0/data/words.txt": b"other words\n"})
    with pytest.raises(StageError, match="refusing to use an archive that differs from the pin"):
        fetch(archive, tmp_path / "cache")
    assert not (tmp_path / "cache" / "evil-pkg-1.0" / "members").exists()

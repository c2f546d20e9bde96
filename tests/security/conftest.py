"""A package index on local disk (PEP 503 pages with sha256 fragments) and the pip settings to use it."""
import hashlib
import io
import os
import tarfile

import pytest


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_index(root, files_by_project: dict, stated: dict | None = None):
    """Write root/<project>/index.html linking each file; ``stated`` overrides a stated sha256."""
    for project, files in files_by_project.items():
        page = root / project
        page.mkdir(parents=True, exist_ok=True)
        links = "".join(f'<a href="{f.as_uri()}#sha256={(stated or {}).get(f.name, sha256(f))}">{f.name}</a><br/>\n'
                        for f in files)
        (page / "index.html").write_text(f"<!DOCTYPE html><html><body>\n{links}</body></html>\n")
    return root


def add_bytes(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


@pytest.fixture
def only_index(monkeypatch):
    """Point pip (and so our fetch) at one index URL and nothing else: no config files, no find-links."""
    def use(url: str, *extra: str):
        monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
        monkeypatch.setenv("PIP_INDEX_URL", url)
        monkeypatch.setenv("PIP_EXTRA_INDEX_URL", " ".join(extra))
        monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
        monkeypatch.delenv("PIP_NO_INDEX", raising=False)

    return use

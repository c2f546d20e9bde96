"""Fixtures for the tokenize tests."""
import pytest

from tests.tokenize.synthetic import make_corpus


@pytest.fixture
def corpus(tmp_path):
    d = tmp_path / "collect"
    rows = make_corpus(d)
    return d, rows

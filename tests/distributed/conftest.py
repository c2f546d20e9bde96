"""The tiny tokenized corpus of the pretraining tests, for the multi-process runs here."""
from tests.pretrain.conftest import token_dir  # noqa: F401  (a fixture)

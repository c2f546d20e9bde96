"""A restricted unpickler for the one pickled member of the built-in corpus.

gensim ships its newsgroup sample as a zlib-compressed pickle of a scikit-learn ``Bunch``
(a dict) holding lists of strings and two numpy arrays. Unpickling runs code named by the
file, so we never let it import anything: the dict-like ``Bunch`` becomes a plain dict
subclass, numpy objects become inert placeholders (we do not need them), and every other
global is refused.
"""
from __future__ import annotations

import codecs
import copyreg
import io
import pickle


class Bunch(dict):
    """Stand-in for sklearn's Bunch: a plain dict."""


class Opaque:
    """Stand-in for any numpy object: accepts its arguments and state, keeps nothing."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


def _opaque(*args, **kwargs) -> Opaque:
    return Opaque()


_ALLOWED = {
    ("copy_reg", "_reconstructor"): copyreg._reconstructor,
    ("copyreg", "_reconstructor"): copyreg._reconstructor,
    ("__builtin__", "dict"): dict,
    ("builtins", "dict"): dict,
    ("__builtin__", "object"): object,
    ("builtins", "object"): object,
    # Protocol 2 pickles bytes as _codecs.encode(text, "latin1"): a pure data transform.
    ("_codecs", "encode"): codecs.encode,
    ("sklearn.datasets.base", "Bunch"): Bunch,
    ("sklearn.utils", "Bunch"): Bunch,
    ("sklearn.utils._bunch", "Bunch"): Bunch,
}


class RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "numpy" or module.startswith("numpy."):
            return _opaque
        raise pickle.UnpicklingError(f"refused to load global {module}.{name} from a data pickle")


def loads(data: bytes):
    return RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()

"""Load a pickle that holds only numpy arrays (nested in dicts), refusing anything that could run code.

`pickle.load` calls whatever callables a file names, so a tampered weight file could execute code. This
unpickler resolves only the three globals numpy needs to rebuild an array and refuses every other one
before it is imported or called; the result is then checked to be a tree of str-keyed dicts of
numeric arrays.
"""

from __future__ import annotations

import importlib
import io
import pickle
from pathlib import Path

import numpy as np


def _numpy_reconstruct():
    # numpy >= 2 moved numpy.core to numpy._core; pickles written by numpy 1.x still name numpy.core.
    for module in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            return importlib.import_module(module)._reconstruct
        except (ImportError, AttributeError):
            continue
    raise ImportError("this numpy has no multiarray._reconstruct")


class RefusedGlobalError(pickle.UnpicklingError):
    """The pickle named a global outside the numpy-array allow-list."""


class NumpyOnlyUnpickler(pickle.Unpickler):
    """An Unpickler whose `find_class` allows only numpy array/dtype reconstruction."""

    def __init__(self, file: io.BufferedIOBase):
        super().__init__(file)
        reconstruct = _numpy_reconstruct()
        self._allowed = {
            ("numpy.core.multiarray", "_reconstruct"): reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): reconstruct,
            ("numpy", "ndarray"): np.ndarray,
            ("numpy", "dtype"): np.dtype,
        }

    def find_class(self, module: str, name: str):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise RefusedGlobalError(
                f"refused global {module}.{name}: only numpy arrays may be unpickled from a weight file"
            ) from None

    def persistent_load(self, pid):
        raise RefusedGlobalError("refused persistent id: only numpy arrays may be unpickled from a weight file")


def _check_tree(node, where: str = "") -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if not isinstance(key, str):
                raise pickle.UnpicklingError(f"non-string key {key!r} at {where or '/'}")
            _check_tree(value, f"{where}/{key}")
    elif isinstance(node, np.ndarray):
        if node.dtype.kind not in "fiu":
            raise pickle.UnpicklingError(f"array at {where} has non-numeric dtype {node.dtype}")
    else:
        raise pickle.UnpicklingError(f"unexpected {type(node).__name__} at {where or '/'}")


def load_numpy_pickle(path: str | Path) -> dict:
    """Read a pickle of nested dicts of numeric numpy arrays from `path`, safely.

    Raises RefusedGlobalError (a pickle.UnpicklingError) if the file names any callable other than
    numpy's array reconstruction, and pickle.UnpicklingError if the content is not such a tree.
    """
    with open(path, "rb") as f:
        tree = NumpyOnlyUnpickler(f).load()
    if not isinstance(tree, dict):
        raise pickle.UnpicklingError(f"expected a dict at the top level, got {type(tree).__name__}")
    _check_tree(tree)
    return tree

"""The examples in the library's docstrings run and print what they show (every module is
imported, as documentation tools do; importing one never shadows a public name such as
``deeplk.align``)."""

import doctest
import importlib
import pkgutil

import pytest

import deeplk

MODULES = sorted(m.name for m in pkgutil.walk_packages(deeplk.__path__, "deeplk."))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} docstring examples failed"


def test_importing_every_module_keeps_the_align_function():
    for name in MODULES:
        importlib.import_module(name)
    assert callable(deeplk.align) and deeplk.align.__module__ == "deeplk.alignment"

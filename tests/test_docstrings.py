"""The runnable examples in the docstrings stay true."""

import doctest
import importlib

import pytest


@pytest.mark.parametrize("module", ["monitor", "loop", "theory", "models", "history", "stats"])
def test_docstring_examples(module):
    mod = importlib.import_module(f"gradscope.{module}")
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0

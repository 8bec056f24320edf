"""The public API: what `import tcpmax` offers, documented, with examples that run."""

import doctest
import importlib
import inspect
import subprocess
import sys

import pytest

import tcpmax

CLASSES_AND_FUNCTIONS = [n for n in tcpmax.__all__ if n != "__version__"]
# Modules whose docstring examples need no host, network or processes.
PURE_MODULES = ["tcpmax.model.capacity", "tcpmax.model.plan", "tcpmax.model.schema"]


@pytest.mark.parametrize("name", CLASSES_AND_FUNCTIONS)
def test_every_public_name_has_a_docstring_of_its_own(name):
    obj = getattr(tcpmax, name)
    doc = inspect.getdoc(obj) or ""
    assert doc and not doc.startswith(f"{name}("), f"{name} has no written docstring"


@pytest.mark.parametrize("module", PURE_MODULES)
def test_docstring_examples_run_as_written(module):
    result = doctest.testmod(importlib.import_module(module),
                             optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_importing_tcpmax_leaves_the_engine_unloaded_until_it_is_used():
    code = ("import sys, tcpmax; before = 'tcpmax.engine.loader' in sys.modules; "
            "tcpmax.LoadRun; print(before, 'tcpmax.engine.loader' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.split() == ["False", "True"]


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no_such_thing"):
        tcpmax.no_such_thing  # noqa: B018

"""The docstring examples run and hold."""

from __future__ import annotations

import doctest

import pytest

import napari_ntd._denoise
import napari_ntd._trainers


@pytest.mark.parametrize("module", [napari_ntd._denoise, napari_ntd._trainers])
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0

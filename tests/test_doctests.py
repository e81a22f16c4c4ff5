"""The docstring examples run and hold."""

from __future__ import annotations

import doctest

import pytest

import napari_ntd._api
import napari_ntd._dip._trainers


@pytest.mark.parametrize("module", [napari_ntd._api, napari_ntd._dip._trainers])
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0

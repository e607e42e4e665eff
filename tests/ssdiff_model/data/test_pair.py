"""The pair types: a batch's example is a pair with the batch's description, and the package's names load lazily
(importing the pair type loads no reader)."""
import ast
import dataclasses
import subprocess
import sys

import numpy as np
import pytest

import ssdiff_model.data
from ssdiff_model.data.pair import PansharpeningBatch, PansharpeningData, PansharpeningPair


def test_pair_and_batch_share_their_description_fields():
    shared = [f.name for f in dataclasses.fields(PansharpeningData)]
    assert shared == ["pan", "ms_lr", "ratio", "full_scale", "bits", "sensor", "band_names", "gt", "lms", "source",
                      "ms_degradation"]
    assert [f.name for f in dataclasses.fields(PansharpeningBatch)] == shared
    assert [f.name for f in dataclasses.fields(PansharpeningPair)] == [
        *shared, "crs", "pan_transform", "ms_transform", "notes", "radiometry"]
    batch = PansharpeningBatch(np.zeros((2, 8, 8), np.float32), np.ones((2, 3, 4, 4), np.float32), 2, 255.0, bits=8,
                               sensor="QB", band_names=("b", "g", "r"), ms_degradation="bicubic")
    pair = batch.pair(1)
    assert isinstance(pair, PansharpeningPair) and not isinstance(batch, PansharpeningPair)
    described = (pair.ratio, pair.full_scale, pair.bits, pair.sensor, pair.band_names, pair.ms_degradation)
    assert described == (2, 255.0, 8, "QB", ("b", "g", "r"), "bicubic")
    assert pair.notes == ("example 1 of 2",) and pair.n_bands == 3 and len(list(batch)) == 2
    with pytest.raises(ValueError, match="2 band names for 3 MS bands"):
        dataclasses.replace(pair, band_names=("b", "g"))


def test_the_package_names_resolve_and_the_pair_type_loads_no_reader():
    for name in ssdiff_model.data.__all__:
        assert getattr(ssdiff_model.data, name) is not None, name
    with pytest.raises(AttributeError):
        ssdiff_model.data.read_nothing  # noqa: B018
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, ssdiff_model.data.pair; print(sorted(m for m in sys.modules "
                               "if m.startswith('ssdiff_model.data')))"],
        capture_output=True, text=True, check=True).stdout
    assert ast.literal_eval(loaded) == ["ssdiff_model.data", "ssdiff_model.data.pair"]

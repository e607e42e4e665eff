"""The split of a training set: by scene, deterministic, stable when scenes are added."""
import pytest

from ssdiff_model.training.split import assign_splits


def test_split_is_deterministic_by_scene():
    ids = [f"set:{k}" for k in range(10)]
    first = assign_splits(ids, 0.3, seed=1)
    assert first == assign_splits(list(reversed(ids)), 0.3, seed=1)
    assert sum(v == "validation" for v in first.values()) == 3
    grown = assign_splits(ids + ["set:new"], 0.3, seed=1)  # adding scenes does not move the held-out ones
    assert sum(grown[i] != first[i] for i in ids) <= 1
    explicit = assign_splits(["a#1of2", "a#2of2", "b"], ["a"])  # a source id names all its regions
    assert explicit == {"a#1of2": "validation", "a#2of2": "validation", "b": "train"}
    assert assign_splits(["only"], 0.2) == {"only": "train"}
    with pytest.raises(ValueError, match="not among the sources"):
        assign_splits(ids, ["set:99"])
    with pytest.raises(ValueError, match="twice"):
        assign_splits(["a", "a"], 0.5)

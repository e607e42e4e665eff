"""The dihedral group on images and the self-ensemble that averages a function over its views."""
import pytest
import torch

from ssdiff_model.model.dihedral import ENSEMBLE_SIZES, dihedral, ensemble_elements, self_ensemble, undo_dihedral

IMAGE = torch.arange(2 * 3 * 5 * 5, dtype=torch.float64).reshape(2, 3, 5, 5)


def _element_of(image: torch.Tensor) -> int:
    """Which group element turns IMAGE into `image`."""
    (k,) = [k for k in range(8) if torch.equal(dihedral(IMAGE, k), image)]
    return k


def test_eight_distinct_elements_each_undone_by_its_inverse():
    assert len({dihedral(IMAGE, k).numpy().tobytes() for k in range(8)}) == 8
    for k in range(8):
        assert torch.equal(undo_dihedral(dihedral(IMAGE, k), k), IMAGE)
        assert torch.equal(dihedral(undo_dihedral(IMAGE, k), k), IMAGE)


@pytest.mark.parametrize("size", ENSEMBLE_SIZES)
def test_every_ensemble_averages_a_subgroup(size):
    # closed under composition and inverses: the average of a subgroup's views is itself invariant under it
    elements = set(ensemble_elements(size))
    assert len(elements) == size and 0 in elements
    for a in elements:
        assert _element_of(undo_dihedral(IMAGE, a)) in elements
        for b in elements:
            assert _element_of(dihedral(dihedral(IMAGE, b), a)) in elements


def test_an_equivariant_function_is_its_own_ensemble_and_any_function_becomes_equivariant():
    def pixelwise(x):   # commutes with every turn and mirror
        return 2 * x + 1

    for size in ENSEMBLE_SIZES:
        torch.testing.assert_close(self_ensemble(pixelwise, [IMAGE], size), pixelwise(IMAGE))

    def biased(x, y):   # a ramp across columns and rows: changed by every turn and mirror
        height, width = x.shape[-2:]
        return x + y * (torch.arange(width, dtype=x.dtype) + 10 * torch.arange(height, dtype=x.dtype)[:, None])

    plain = self_ensemble(biased, [IMAGE, IMAGE], 1)
    assert torch.equal(plain, biased(IMAGE, IMAGE))   # one view: the function as it is
    averaged = self_ensemble(biased, [IMAGE, IMAGE], 8)
    expected = sum(undo_dihedral(biased(dihedral(IMAGE, k), dihedral(IMAGE, k)), k) for k in range(8)) / 8
    torch.testing.assert_close(averaged, expected)
    for k in range(8):   # the whole group's average commutes with every element
        turned = self_ensemble(biased, [dihedral(IMAGE, k), dihedral(IMAGE, k)], 8)
        torch.testing.assert_close(turned, dihedral(averaged, k))
        if k:
            assert not torch.allclose(biased(dihedral(IMAGE, k), dihedral(IMAGE, k)), dihedral(plain, k))


@pytest.mark.parametrize("size", [0, 3, 16])
def test_other_sizes_are_refused(size):
    with pytest.raises(ValueError, match="self-ensemble size"):
        self_ensemble(lambda x: x, [IMAGE], size)

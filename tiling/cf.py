"""The mosaic store as CF-friendly, portable data: what netCDF tools and ``to_netcdf`` accept.

netCDF attributes hold strings and numbers only, so provenance that is nested (the model config, the scene's
sources and their checksums, the Ray cluster, the quality indexes), a list, a bool or None is stored as a JSON
string, and the attribute ``json_attributes`` names the attributes so stored: ``xr.open_zarr(mosaic)`` then writes
to netCDF as it is, and ``decode_attrs`` (which ``store_attrs`` and ``open_mosaic`` apply) gives the values back.
Stores written before this have their nested values as they are; decoding leaves those alone.

CF metadata: the projection coordinates carry their standard names, units and axes (from the CRS, by rioxarray),
``hrms`` its units and long name, the manifest its flag values and meanings, and the store ``Conventions``,
``title``, ``source`` (the model and checkpoint) and ``history`` (when it was made, by what).
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["CONVENTIONS", "JSON_ATTRIBUTES", "cf_global_attrs", "cf_mosaic", "decode_attrs", "encode_attrs"]

JSON_ATTRIBUTES = "json_attributes"   # names of the attributes stored as JSON strings, space separated
CONVENTIONS = "CF-1.8"


def _plain(value: Any) -> bool:
    """What every netCDF writer takes as an attribute as it is."""
    return isinstance(value, (str, int, float)) and not isinstance(value, bool)


def encode_attrs(attrs: Mapping[str, Any], already: str = "") -> dict[str, Any]:
    """``attrs`` with every value that is not a string or a number as a JSON string, and ``json_attributes``
    naming those (with the ones ``already`` named, when updating a store's attributes)."""
    encoded, names = {}, set(already.split())
    for key, value in attrs.items():
        if key == JSON_ATTRIBUTES:
            continue
        if _plain(value):
            encoded[key] = value
            names.discard(key)
        else:
            encoded[key] = json.dumps(value, sort_keys=True, default=str)
            names.add(key)
    encoded[JSON_ATTRIBUTES] = " ".join(sorted(names))
    return encoded


def decode_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """The attributes with the values ``json_attributes`` names parsed back (values that are not strings, as an
    older store or a hand edit left them, are kept as they are)."""
    names = set(str(attrs.get(JSON_ATTRIBUTES, "")).split())
    decoded = {}
    for key, value in attrs.items():
        if key == JSON_ATTRIBUTES:
            continue
        decoded[key] = json.loads(value) if key in names and isinstance(value, str) else value
    return decoded


def cf_mosaic(ds: xr.Dataset, hrms: str, done: str, manifest_codes: Mapping[str, int]) -> xr.Dataset:
    """CF attributes on a new mosaic Dataset (coordinates, the image, the manifest); the global ones come from
    ``cf_global_attrs``."""
    ds = ds.copy()
    ds[hrms] = ds[hrms].rio.write_coordinate_system()
    for name in ("x", "y"):
        ds[name].attrs.update(ds[hrms][name].attrs)
    ds["band"].attrs.update(long_name="multispectral band name")
    ds[hrms].attrs.update(long_name="pansharpened multispectral image on the PAN grid (the scene's digital numbers)",
                          units="1")
    codes = sorted(manifest_codes.items(), key=lambda item: item[1])
    ds[done].attrs.update(long_name="tile manifest", flag_values=[code for _, code in codes],
                          flag_meanings=" ".join(name for name, _ in codes))
    return ds


def cf_global_attrs(*, created: str, code_version: str, checkpoint_hash: str, scene_store: str) -> dict[str, str]:
    """The CF global attributes of a new mosaic: ``Conventions``, ``title``, ``source`` (the model and checkpoint)
    and ``history`` (when it was made, by what, from which scene store)."""
    return {"Conventions": CONVENTIONS,
            "title": "SSDiff pansharpened mosaic",
            "source": f"SSDiff diffusion pansharpening, checkpoint sha256 {checkpoint_hash}",
            "history": f"{created} created by ssdiff-pansharpening {code_version} from scene store {scene_store}"}

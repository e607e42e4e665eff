"""STAC in: a STAC Item whose assets are a scene's PAN and MS files, ingested like the files themselves.

    ssdiff ingest --stac item.json --pan-asset pan --ms-asset ms [--sensor S] [--nodata V] --out scene.zarr

The item is a local file, an http(s) URL or an object (``s3://bucket/items/item.json``, configured from the AWS_*
variables like every object-store path). Asset hrefs may be relative (resolved against the item's own location,
as the STAC spec says), absolute local paths, ``file://`` URLs, http(s) URLs, which are read through GDAL's
``/vsicurl/`` (range requests: only the bytes GDAL needs travel) and checksummed as they stream, or object-store
URLs (``s3://...``, as archives on AWS list them), read by window through GDAL's ``/vsis3/``. The MS may be one
asset or several single-band ones (``--ms-asset B2 B3 B4 B5``, in band order). Band names default to the assets'
``eo:bands`` (STAC 1.0) or ``bands`` (STAC 1.1) names when every MS asset lists its bands.

The scene store records, beside the files' checksums, the item's id, collection and location and each asset's key
and resolved href (attribute ``stac``). Errors name the item: unreadable or invalid JSON, a document that is not a
STAC Item, an asset key the item does not have (with the keys it does have).
"""
from __future__ import annotations

import json
import os
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Sequence

import pystac

from ssdiff_model.errors import BadInput
from tiling import objstore
from tiling.sources import is_remote, vsicurl_path

__all__ = ["asset_href", "ingest_stac", "read_item", "reader_path", "stac_scene"]

PathLike = str | os.PathLike
ITEM_TIMEOUT_S = 60


def read_item(item: PathLike) -> pystac.Item:
    """The STAC Item at ``item`` (a path or an http(s) URL), its self href set so that relative asset hrefs resolve
    against it. ValueError / FileNotFoundError naming ``item`` when it cannot be read or is no STAC Item."""
    text, location = _read_text(str(item))
    try:
        document = json.loads(text)
    except json.JSONDecodeError as err:
        raise BadInput(f"{item}: not valid JSON ({err})") from None
    kind = document.get("type") if isinstance(document, dict) else type(document).__name__
    if kind != "Feature" or "stac_version" not in document:
        found = f"its type is {kind!r}" if kind != "Feature" else "a GeoJSON Feature without stac_version"
        raise BadInput(f"{item}: not a STAC Item ({found}); give the JSON of one Item, not a Collection, "
                         f"ItemCollection or Catalog")
    if not isinstance(document.get("assets"), dict):
        raise BadInput(f"{item}: not a STAC Item (no 'assets' object)")
    try:
        return pystac.Item.from_dict(document, href=location, migrate=True)
    except (pystac.STACError, pystac.STACTypeError, KeyError, TypeError, ValueError) as err:
        problem = f"no {err}" if isinstance(err, KeyError) else str(err)
        raise BadInput(f"{item}: not a valid STAC Item ({problem})") from err


def _read_text(item: str) -> tuple[str, str]:
    """The item's text and its location as an absolute href (URL, or absolute path)."""
    if is_remote(item):
        try:
            with urllib.request.urlopen(item, timeout=ITEM_TIMEOUT_S) as response:
                return response.read().decode("utf-8"), item
        except (OSError, UnicodeDecodeError) as err:
            raise BadInput(f"{item}: cannot read the STAC Item ({err})") from None
    if objstore.is_url(item):   # an object: the bucket and credentials checked first, one line when refused
        objstore.require_reachable(item, writable=False, what="STAC Item")
        if not objstore.is_file(item):
            raise FileNotFoundError(f"{item}: no such STAC Item object")
        try:
            with objstore.open_input(item) as stream:
                return stream.read().decode("utf-8"), item
        except UnicodeDecodeError as err:
            raise BadInput(f"{item}: not valid JSON (not UTF-8 text: {err})") from None
    path = Path(_local(item))
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such STAC Item file")
    try:
        return path.read_text(encoding="utf-8"), str(path.resolve())
    except UnicodeDecodeError as err:
        raise BadInput(f"{path}: not valid JSON (not UTF-8 text: {err})") from None


def _local(href: str) -> str:
    """A local path from a path or a ``file://`` URL."""
    if href.startswith("file:"):
        return urllib.request.url2pathname(urllib.parse.urlparse(href).path)
    return href


def asset_href(item: pystac.Item, key: str, where: PathLike) -> str:
    """The absolute href of asset ``key``; a ValueError naming the item and listing its assets if it has none."""
    asset = item.assets.get(key)
    if asset is None:
        present = ", ".join(sorted(item.assets)) or "none"
        raise BadInput(f"{where}: item {item.id!r} has no asset {key!r} (its assets: {present})")
    return asset.get_absolute_href() or asset.href


def reader_path(href: str) -> str:
    """What the GeoTIFF reader opens for an asset href: a local path, a GDAL /vsicurl/ path for an http(s) URL, or
    the object-store URL itself (ingest reads it through /vsis3/)."""
    if is_remote(href):
        return vsicurl_path(href)
    return href if objstore.is_url(href) else _local(href)


def _band_names(item: pystac.Item, keys: Sequence[str]) -> list[str]:
    """Band names from the MS assets' band lists (STAC 1.0 ``eo:bands``, 1.1 ``bands``), or [] when an asset has
    none or a band is unnamed."""
    names = []
    for key in keys:
        fields = item.assets[key].extra_fields
        bands = fields.get("eo:bands") or fields.get("bands")
        if not isinstance(bands, list) or not bands:
            return []
        for band in bands:
            if not isinstance(band, dict):
                return []
            name = band.get("name") or band.get("common_name") or band.get("eo:common_name")
            if not isinstance(name, str) or not name:
                return []
            names.append(name)
    return names


def stac_scene(item: PathLike, pan_asset: str, ms_assets: Sequence[str]) -> dict[str, Any]:
    """The scene an item describes: ``pan`` and ``ms`` paths for the reader, ``band_names`` from the item (may be
    empty), and ``provenance`` for the scene store."""
    if not pan_asset or not ms_assets:
        raise BadInput(f"{item}: --stac needs --pan-asset and --ms-asset (the keys of the PAN and MS assets)")
    stac_item = read_item(item)
    pan_href = asset_href(stac_item, pan_asset, item)
    ms_hrefs = [asset_href(stac_item, key, item) for key in ms_assets]
    provenance = {"stac": {
        "item_id": stac_item.id, "collection": stac_item.collection_id, "item": stac_item.get_self_href(),
        "assets": {"pan": {"key": pan_asset, "href": pan_href},
                   "ms": [{"key": key, "href": href} for key, href in zip(ms_assets, ms_hrefs)]},
    }}
    return {"pan": reader_path(pan_href), "ms": [reader_path(h) for h in ms_hrefs],
            "band_names": _band_names(stac_item, ms_assets), "provenance": provenance}


def ingest_stac(item: PathLike, pan_asset: str, ms_assets: Sequence[str], out: PathLike, *,
                sensor: str | None = None, band_names: Sequence[str] = (), nodata: float | None = None) -> dict:
    """``ingest_scene`` of the files an item's assets name; the summary adds the item's provenance."""
    from flows.ingest import ingest_scene

    scene = stac_scene(item, pan_asset, ms_assets)
    summary = ingest_scene(scene["pan"], scene["ms"], out, sensor=sensor,
                           band_names=tuple(band_names) or tuple(scene["band_names"]), nodata=nodata,
                           provenance=scene["provenance"])
    return {**summary, **scene["provenance"]}

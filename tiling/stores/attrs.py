"""The attributes of the scene and mosaic stores as typed objects: ``SceneAttrs`` and ``MosaicAttrs``.

Each is read with ``from_attrs`` from a store's attribute dict, JSON-encoded for netCDF or decoded (``tiling.cf``),
and written with ``as_attrs``, which gives the keys and values the layouts define (``tiling.stores.layout``).
Stores written by older code still read: attributes added since are None (or their documented default), the
legacy sampler name reads as the sampler it names (``LEGACY_SAMPLER_NAMES``), and attributes these classes do not
name (provenance a caller added: a STAC item, a Prefect flow run, a Ray job) are kept in ``extra``, in order.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

from ssdiff_model.errors import BadInput
from ssdiff_model.model.sampling import SAMPLING_ADDED_LATER
from ssdiff_model.science.equalization import PanEqualization
from ssdiff_model.science.registration import MSOffset
from tiling import objstore
from tiling.cf import decode_attrs
from tiling.stores.layout import LEGACY_SAMPLER_NAMES, MOSAIC_LAYOUT, SCENE_LAYOUT, StorePath

__all__ = ["MosaicAttrs", "SceneAttrs", "open_store", "store_attrs"]


def store_attrs(store: StorePath, layout: str) -> dict[str, Any]:
    """The store's attributes, decoded (``tiling.cf.decode_attrs``), after checking the store's layout.

    Args:
        store: a local path or an object-store URL.
        layout: ``SCENE_LAYOUT`` or ``MOSAIC_LAYOUT``.

    Returns:
        The attributes as a plain dict (``SceneAttrs.from_attrs`` / ``MosaicAttrs.from_attrs`` type them).

    Raises:
        BadInput: no Zarr store there, or one of another layout.
    """
    import zarr

    try:
        attrs = dict(zarr.open_group(objstore.zarr_store(store, read_only=True), mode="r").attrs)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError) as err:
        problem = objstore.storage_error(err, str(store)) if objstore.is_url(store) else None
        raise problem or BadInput(f"{store}: no Zarr store there ({err})") from err
    except Exception as err:
        problem = objstore.storage_error(err, str(store)) if objstore.is_url(store) else None
        if problem is None:
            raise
        raise problem from err
    if attrs.get("layout") != layout:
        raise BadInput(f"{store}: not a {layout} store (layout attribute {attrs.get('layout')!r})")
    return decode_attrs(attrs)   # a mosaic keeps nested values as JSON strings (tiling.cf)


def open_store(store: StorePath, layout: str, dask: bool = True, decode: bool = False):
    """A store of ``layout`` as a lazy, georeferenced xarray Dataset, after checking its layout.

    Args:
        store: a local path or an object-store URL.
        layout: ``SCENE_LAYOUT`` or ``MOSAIC_LAYOUT``.
        dask: dask arrays chunked like the store (True), or lazily indexed ones (no task graph, whose size grows
            with the scene).
        decode: decode the JSON-encoded attributes (``tiling.cf.decode_attrs``).

    Returns:
        The Dataset.

    Raises:
        BadInput: no Zarr store there, or one of another layout.
    """
    import xarray as xr

    store_attrs(store, layout)
    ds = xr.open_zarr(objstore.zarr_store(store, read_only=True), decode_coords="all", chunks={} if dask else None)
    if decode:
        ds.attrs = decode_attrs(ds.attrs)
    return ds


def _equalization(value: Any) -> PanEqualization | None:
    return PanEqualization.from_attrs(value) if value else None


def _offset(value: Any) -> MSOffset | None:
    return MSOffset.from_attrs(value) if value else None


def _sampler(value: Any) -> Any:
    return LEGACY_SAMPLER_NAMES.get(value, value)


def _written(value: Any) -> Any:
    """A field's value as the store holds it: typed values as their own attrs, tuples as lists."""
    if isinstance(value, (PanEqualization, MSOffset)):
        return value.as_attrs()
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Mapping):
        return dict(value)
    return value


def _attr(default: Any = dataclasses.MISSING, *, key: str | None = None, read=None, always: bool = False):
    """A field stored under ``key`` (default: its name), converted by ``read`` when read; ``always``: written even
    when None (else a None field is left out, as stores that never had it)."""
    metadata = {"key": key, "read": read, "always": always}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


class _StoreAttrs:
    """``from_attrs`` / ``as_attrs`` over the dataclass fields of a subclass (``extra`` holds the rest)."""
    LAYOUT: ClassVar[str]

    @classmethod
    def _fields(cls):
        return [f for f in dataclasses.fields(cls) if f.name != "extra"]

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]):
        """The typed attributes of a store's attribute dict, JSON-encoded or decoded (``tiling.cf``).

        Args:
            attrs: the store's attributes (``zarr.open_group(store).attrs``, ``store_attrs``, ``Dataset.attrs``).

        Returns:
            The typed object; attributes it does not name are kept in its ``extra``.

        Raises:
            BadInput: an attribute every store of the layout has is missing.
        """
        attrs = decode_attrs(attrs)
        values, keys = {}, set()
        for f in cls._fields():
            key = f.metadata["key"] or f.name
            keys.add(key)
            if key in attrs:
                read = f.metadata["read"]
                values[f.name] = read(attrs[key]) if read is not None and attrs[key] is not None else attrs[key]
        missing = [f.name for f in cls._fields()
                   if f.name not in values and f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING]
        if missing:
            raise BadInput(f"not a complete {cls.LAYOUT} store: attributes {missing} are missing")
        return cls(**values, extra={k: v for k, v in attrs.items() if k not in keys})

    @classmethod
    def read(cls, store: StorePath):
        """The typed attributes of the store at ``store`` (BadInput if it is not a store of this layout).

        Args:
            store: a local path or an object-store URL.

        Returns:
            The typed object (``from_attrs`` of ``store_attrs``).
        """
        try:
            return cls.from_attrs(store_attrs(store, cls.LAYOUT))
        except BadInput as err:
            if str(err).startswith(str(store)):
                raise
            raise BadInput(f"{store}: {err}") from err

    def as_attrs(self) -> dict[str, Any]:
        """The attributes as the store holds them (decoded: ``tiling.cf.encode_attrs`` encodes them for netCDF).

        Returns:
            A dict of JSON values: the fields in the layout's order, then ``extra``.
        """
        attrs = {}
        for f in self._fields():
            value = getattr(self, f.name)
            if value is not None or f.metadata["always"]:
                attrs[f.metadata["key"] or f.name] = _written(value)
        attrs.update(self.extra)
        return attrs


@dataclass(frozen=True, kw_only=True)
class SceneAttrs(_StoreAttrs):
    """A scene store's attributes (``tiling.stores.layout``); None where a store ingested by older code lacks one.

    ``sources`` maps each input file's name to ``{"path", "sha256"}``; ``radiometry`` is how the full scale was
    decided (``ssdiff_model.science.radiometry``); ``content_sha256`` the checksum of the stored pixels and full
    scale (``tiling.integrity.content_sha256``).
    """
    LAYOUT: ClassVar[str] = SCENE_LAYOUT

    layout: str = _attr(SCENE_LAYOUT)
    sensor: str = _attr()
    ratio: int = _attr(read=int)
    full_scale: float = _attr(read=float)
    bits: int | None = _attr(None, always=True)
    band_names: tuple[str, ...] = _attr(read=tuple)
    sources: dict[str, dict[str, str]] = _attr()
    notes: tuple[str, ...] = _attr((), read=tuple, always=True)
    pan_equalization: PanEqualization | None = _attr(None, read=_equalization, always=True)
    ms_offset_pan_px: MSOffset | None = _attr(None, read=_offset, always=True)
    nodata: float | None = _attr(None, always=True)
    # how the MS was made from the scene ("mtf", "bicubic": ssdiff_model.science.back_projection); None: before it
    # was recorded, "mtf"
    ms_degradation: str | None = _attr(None, always=True)
    radiometry: dict[str, Any] | None = _attr(None, always=True)
    content_sha256: str | None = _attr(None, always=True)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class MosaicAttrs(_StoreAttrs):
    """A mosaic store's attributes (``tiling.stores.layout``): the run settings it was created with, the model, the
    scene, then the provenance of the runs that filled it. None where a store made by older code lacks one.

    The run settings (``tile_size``, ``halo``, ``seed``, ``steps``, ``sampler``, ``back_projection``, ``ensemble``,
    ``checkpoint_hash``, ``scene_sources``, ``scene_content``, ``batch_size``) are those every run writing into the
    store must share (``tiling.stores.mosaic.check_run_settings``).
    """
    LAYOUT: ClassVar[str] = MOSAIC_LAYOUT

    # CF global attributes (tiling.cf.cf_global_attrs)
    conventions: str | None = _attr(None, key="Conventions")
    title: str | None = _attr(None)
    source: str | None = _attr(None)
    history: str | None = _attr(None)
    layout: str = _attr(MOSAIC_LAYOUT)
    ratio: int = _attr(read=int)
    core: int | None = _attr(None)
    eta: float | None = _attr(None)
    # the run settings
    tile_size: int = _attr()
    halo: int = _attr()
    seed: int | None = _attr(None)
    steps: int | None = _attr(None)
    sampler: str | None = _attr(None, read=_sampler)
    back_projection: int | None = _attr(None)   # iterations onto the MS
    ensemble: int | None = _attr(None)   # dihedral views averaged per tile
    checkpoint_hash: str | None = _attr(None)
    scene_sources: dict[str, Any] | None = _attr(None)
    scene_content: str | None = _attr(None)
    batch_size: int | None = _attr(None)
    # the model and the scene
    model: str | None = _attr(None)
    model_config: dict[str, Any] | None = _attr(None)
    model_sensor: str | None = _attr(None)
    full_scale: float | None = _attr(None, read=float)
    model_full_scale: float | None = _attr(None, read=float)
    band_names: tuple[str, ...] | None = _attr(None, read=tuple)
    scene_store: str | None = _attr(None)
    scene_sensor: str | None = _attr(None)
    scene_full_scale: float | None = _attr(None, read=float)
    pan_equalization: PanEqualization | None = _attr(None, read=_equalization, always=True)
    code_version: str | None = _attr(None)
    created: str | None = _attr(None)
    manifest_codes: dict[str, int] | None = _attr(None)
    shard_tiles: int = _attr(1, read=int)
    # provenance of the run that created the store (infra.ray_sharpen.sharpen_scene)
    checkpoint: str | None = _attr(None)
    sampling_settings_from: dict[str, str] | None = _attr(None)
    adaptation: dict[str, Any] | None = _attr(None)
    # provenance recorded later (tiling.stores.mosaic.record_provenance)
    started: str | None = _attr(None)
    finished: str | None = _attr(None)
    ray_cluster: dict[str, Any] | None = _attr(None)
    last_run: dict[str, Any] | None = _attr(None)
    quality: dict[str, Any] | None = _attr(None)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        # A store made before a sampling setting existed was made without it (no back-projection, one view).
        if self.steps is not None:
            for name, value in SAMPLING_ADDED_LATER.items():
                if getattr(self, name) is None:
                    object.__setattr__(self, name, value)

    @property
    def missing_code(self) -> int:
        """The manifest's code of a tile not sharpened yet."""
        return self.manifest_codes["missing"]

"""`ssdiff ingest --stac`: a STAC Item whose assets are the PAN and MS files, ingested like the files themselves.

Real files throughout: crops of the Landsat-8 scene as GeoTIFFs, Item JSON written as STAC 1.0 / 1.1 documents,
and for remote assets an HTTP server on 127.0.0.1 that answers range requests, as object stores do, read by GDAL's
/vsicurl/.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import BAND_NAMES, MS_BANDS, run_cli, store_state, write_crop

from flows.cli import EXIT_BAD_INPUT, main
from tiling import open_scene


def stac_item(assets: dict[str, dict], item_id: str = "LC08-crop", version: str = "1.0.0") -> dict:
    return {"type": "Feature", "stac_version": version, "id": item_id, "collection": "landsat-c2-l1",
            "geometry": {"type": "Polygon", "coordinates": [[[-87.0, 32.0], [-86.9, 32.0], [-86.9, 32.1],
                                                             [-87.0, 32.1], [-87.0, 32.0]]]},
            "bbox": [-87.0, 32.0, -86.9, 32.1], "properties": {"datetime": "2015-08-04T16:20:00Z"},
            "links": [], "assets": assets}


def tiff(href: str, **extra) -> dict:
    return {"href": href, "type": "image/tiff; application=geotiff", "roles": ["data"], **extra}


def write_item(path: Path, item: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(item))
    return path


def ingest(item, out: Path, *extra: str) -> list[str]:
    return ["ingest", "--stac", str(item), *extra, "--sensor", "Landsat8", "--out", str(out)]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def item_folder(crop, tmp_path_factory) -> Path:
    """A folder with the crop's files and an item naming them relative to itself, the MS with its eo:bands."""
    folder = tmp_path_factory.mktemp("stac") / "LC08-crop"
    (folder / "data").mkdir(parents=True)
    shutil.copy(crop["pan"], folder / "data" / "pan.tif")
    shutil.copy(crop["ms"], folder / "ms.tif")
    bands = [{"name": name, "common_name": name} for name in BAND_NAMES]
    write_item(folder / "item.json", stac_item({
        "pan": tiff("./data/pan.tif"), "ms": tiff("ms.tif", **{"eo:bands": bands}),
        "thumbnail": {"href": "thumb.png", "type": "image/png", "roles": ["thumbnail"]}}))
    return folder


def test_an_item_with_relative_hrefs_ingests_its_files_and_records_where_they_came_from(item_folder, scene_store,
                                                                                      tmp_path):
    out = tmp_path / "scene.zarr"
    summary = run_cli(ingest(item_folder / "item.json", out, "--pan-asset", "pan", "--ms-asset", "ms"))
    scene, direct = open_scene(out), open_scene(scene_store)     # the same files ingested by path
    np.testing.assert_array_equal(scene["pan"].values, direct["pan"].values)
    np.testing.assert_array_equal(scene["ms"].values, direct["ms"].values)
    assert scene["pan"].rio.crs == direct["pan"].rio.crs
    assert scene["pan"].rio.transform() == direct["pan"].rio.transform()
    assert list(scene["band"].values) == list(BAND_NAMES), "band names from the MS asset's eo:bands"
    pan, ms = item_folder / "data" / "pan.tif", item_folder / "ms.tif"
    assert {s["sha256"] for s in scene.attrs["sources"].values()} == {sha256(pan), sha256(ms)}
    stac = scene.attrs["stac"]
    assert stac["item_id"] == "LC08-crop" and stac["collection"] == "landsat-c2-l1"
    assert stac["item"] == str((item_folder / "item.json").resolve())
    assert stac["assets"] == {"pan": {"key": "pan", "href": str(pan.resolve())},
                              "ms": [{"key": "ms", "href": str(ms.resolve())}]}
    assert summary["stac"] == stac and summary["scene_store"] == str(out)


def test_absolute_paths_file_urls_and_single_band_assets(landsat_scene, item_folder, tmp_path):
    # Landsat-style: one asset per band, the item elsewhere, hrefs absolute paths and file:// URLs (STAC 1.1 bands).
    bands = {b: write_crop([landsat_scene[b]], tmp_path / f"{b}.tif", 200, 200, 128) for b in MS_BANDS}
    assets = {"B8": tiff(str((item_folder / "data" / "pan.tif").resolve()))}
    assets |= {b: tiff(path.resolve().as_uri(), bands=[{"name": b}]) for b, path in bands.items()}
    item = write_item(tmp_path / "catalog" / "item.json", stac_item(assets, item_id="bands", version="1.1.0"))
    out = tmp_path / "scene.zarr"
    run_cli(ingest(item, out, "--pan-asset", "B8", "--ms-asset", *MS_BANDS, "--band-names", *BAND_NAMES))
    scene = open_scene(out)
    assert list(scene["band"].values) == list(BAND_NAMES), "--band-names wins over the item's"
    assert scene["ms"].shape == (4, 128, 128)
    assert [a["href"] for a in scene.attrs["stac"]["assets"]["ms"]] == [p.resolve().as_uri() for p in bands.values()]
    assert {s["path"] for s in scene.attrs["sources"].values()} >= {str(p.resolve()) for p in bands.values()}


def _bad_json(path: Path) -> Path:
    path.write_text('{"type": "Feature", "stac_version": "1.0.0", "id": ')
    return path


def _collection(path: Path) -> Path:
    return write_item(path, {"type": "Collection", "stac_version": "1.0.0", "id": "landsat", "links": []})


def _feature_collection(path: Path) -> Path:
    return write_item(path, {"type": "FeatureCollection", "features": []})


def _plain_geojson(path: Path) -> Path:
    return write_item(path, {"type": "Feature", "geometry": None, "properties": {}})


@pytest.mark.parametrize("make, problem", [
    (_bad_json, "not valid JSON"),
    (_collection, "not a STAC Item (its type is 'Collection')"),
    (_feature_collection, "not a STAC Item (its type is 'FeatureCollection')"),
    (_plain_geojson, "not a STAC Item (a GeoJSON Feature without stac_version)"),
    (lambda path: path, "no such STAC Item file"),
])
def test_what_is_not_a_readable_stac_item_is_one_clear_line(make, problem, tmp_path, capsys):
    item, out = make(tmp_path / "item.json"), tmp_path / "scene.zarr"
    assert main(ingest(item, out, "--pan-asset", "pan", "--ms-asset", "ms")) == EXIT_BAD_INPUT
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "Traceback" not in error, error
    assert error.startswith(f"ssdiff ingest: error: {item}: ") and problem in error, error
    assert not out.exists()


def test_a_missing_asset_key_lists_the_keys_the_item_has_and_touches_no_store(item_folder, scene_store, capsys):
    before = store_state(scene_store)
    for pan, ms in (("panchromatic", "ms"), ("pan", "B5")):
        assert main(ingest(item_folder / "item.json", scene_store, "--pan-asset", pan, "--ms-asset", ms)) == 2
        error = capsys.readouterr().err
        missing = pan if pan != "pan" else ms
        assert f"has no asset '{missing}' (its assets: ms, pan, thumbnail)" in error, error
    assert main(ingest(item_folder / "item.json", scene_store, "--pan-asset", "pan")) == EXIT_BAD_INPUT
    assert "--stac needs --pan-asset and --ms-asset" in capsys.readouterr().err
    assert store_state(scene_store) == before


# A static file server answering single byte-range requests, the way GDAL's /vsicurl/ reads a remote GeoTIFF. In a
# process of its own: rasterio holds the GIL while GDAL opens a file, so a server thread of the test's process would
# never get to answer GDAL's requests.
RANGE_SERVER = r"""
import http.server, re, sys
from pathlib import Path

class Limited:
    def __init__(self, f, length):
        self.f, self.left = f, length
    def read(self, n=-1):
        n = self.left if n < 0 else min(n, self.left)
        self.left -= n
        return self.f.read(n)
    def close(self):
        self.f.close()

class RangeHandler(http.server.SimpleHTTPRequestHandler):
    def send_head(self):
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        path = Path(self.translate_path(self.path))
        if not match or not path.is_file():
            return super().send_head()
        size = path.stat().st_size
        start, end = int(match[1]), min(int(match[2] or size - 1), size - 1)
        f = open(path, "rb")
        f.seek(start)
        self.send_response(206)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        return Limited(f, end - start + 1)
    def log_message(self, *args):
        pass

handler = lambda *args: RangeHandler(*args, directory=sys.argv[1])
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


@pytest.fixture
def http_folder(item_folder):
    """The item folder served over HTTP on 127.0.0.1 (only this machine can reach it), stopped at teardown."""
    server = subprocess.Popen([sys.executable, "-c", RANGE_SERVER, str(item_folder)], stdout=subprocess.PIPE,
                              text=True)
    try:
        port = int(server.stdout.readline())
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_an_item_served_over_http_is_read_through_gdal_vsicurl(http_folder, item_folder, scene_store, tmp_path,
                                                               monkeypatch):
    for proxy in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(proxy, raising=False)   # the server is on this machine
    out = tmp_path / "scene.zarr"
    run_cli(ingest(f"{http_folder}/item.json", out, "--pan-asset", "pan", "--ms-asset", "ms"))
    scene, direct = open_scene(out), open_scene(scene_store)
    np.testing.assert_array_equal(scene["pan"].values, direct["pan"].values)
    np.testing.assert_array_equal(scene["ms"].values, direct["ms"].values)
    stac = scene.attrs["stac"]
    assert stac["item"] == f"{http_folder}/item.json"
    assert stac["assets"]["pan"]["href"] == f"{http_folder}/data/pan.tif"
    # The checksums are of the bytes served, as of the local files, named by the URLs' file names.
    assert {name: s["sha256"] for name, s in scene.attrs["sources"].items()} == {
        "pan.tif": sha256(item_folder / "data" / "pan.tif"), "ms.tif": sha256(item_folder / "ms.tif")}

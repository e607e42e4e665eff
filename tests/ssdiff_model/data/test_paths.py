"""Local path or URL: one rule for the readers and for the object-store layer above them."""
from pathlib import Path

from ssdiff_model.data.paths import as_path, is_url
from tiling import objstore


def test_urls_stay_text_and_local_paths_become_paths():
    # Path("s3://b/k") would fold the "//" and GDAL / fsspec would look for a local file "s3:/b/k"
    assert as_path("s3://bucket/scene/pan.tif") == "s3://bucket/scene/pan.tif"
    assert as_path("https://host/x.tif") == "https://host/x.tif"
    assert as_path(Path("/data/pan.tif")) == Path("/data/pan.tif")
    assert isinstance(as_path("relative/pan.tif"), Path)
    # file:// is a local path for both layers
    assert not is_url("file:///data/pan.tif") and not is_url(Path("/data")) and not is_url(3)
    assert is_url("gs://b/k") and is_url("s3://b/k")


def test_the_object_store_layer_uses_the_same_rule():
    assert objstore.as_path is as_path and objstore.is_url is is_url

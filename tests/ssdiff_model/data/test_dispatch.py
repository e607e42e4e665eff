"""`read_pair` dispatches on the files and names the file it cannot read, whatever its format."""


from __future__ import annotations

import re
import shutil

import pytest

from ssdiff_model.data.dispatch import read_pair


@pytest.mark.parametrize("relative", ["wv3_small/wv3_example.mat", "quickbird_rr_train/0_pan.tif"])
def test_a_truncated_file_is_named_as_unreadable(relative, shared_data, tmp_path):
    source = shared_data / relative
    broken = tmp_path / source.name
    shutil.copyfile(source, broken)
    with open(broken, "r+b") as f:
        f.truncate(source.stat().st_size // 2)
    paths = [broken] if broken.suffix == ".mat" else [broken, shared_data / "quickbird_rr_train" / "0_lr.tif"]
    with pytest.raises(ValueError, match=rf"{re.escape(str(broken))}: unreadable or corrupt file"):
        read_pair(*paths)

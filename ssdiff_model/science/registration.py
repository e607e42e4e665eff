"""PAN-MS co-registration: where the MS really sits on the PAN grid, measured on the images, and whole-pixel crops
that put it back.

Wald's protocol assumes MS pixel i covers PAN pixels [r*i, r*(i+1)): the reduced-resolution PAN and the reference
then show the same ground. Some real pairs are off by whole PAN pixels (the unknown-sensor VHR pairs of
../shared/data by 3 to 5, about one MS pixel). Examples made from such a pair teach a network to inject PAN detail
beside the edges it belongs to. `ms_offset` measures the offset by correlating the high-passed MS intensity with the
means of r x r PAN blocks moved by whole PAN pixels, refined to a fraction of a pixel at the correlation peak;
`coregister` crops the PAN (and the MS by whole MS pixels) so that what is left is within half a PAN pixel of the
nominal place (or of a chosen offset, for misregistered training copies). Nothing is resampled, so no pixel value
changes. `misregistration_warning` words what ingest tells a user whose MS is three quarters of an MS pixel off.

"Nominal" is where Wald's protocol puts it (`nominal_block_offset`): the offsets are relative to that, so a pair
that Wald's degradation made measures (0, 0).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import uniform_filter

from ssdiff_model.data.pair import PansharpeningPair
from ssdiff_model.errors import BadInput
from ssdiff_model.science.resample import central_window

__all__ = ["MSOffset", "coregister", "coregistration_crop", "measured_offset", "misregistration_warning",
           "ms_offset", "nominal_block_offset"]

# The high-pass at the MS scale: the image minus its 5 x 5 mean, so brightness trends do not drive the match.
_HIGH_PASS_SIZE = 5


@dataclass(frozen=True)
class MSOffset:
    """The MS's offset from its nominal place, in PAN pixels (rows, cols; positive: the MS shows ground that lies
    further down / right in the PAN), with the correlation at the best alignment and at the blocks as they are
    (no whole-pixel shift)."""
    rows: float
    cols: float
    correlation: float
    correlation_unmoved: float
    bounded: bool   # False when the peak lies on the edge of the searched window: the true offset may be larger

    @classmethod
    def from_attrs(cls, attrs: dict) -> "MSOffset":
        return cls(rows=float(attrs["rows"]), cols=float(attrs["cols"]), correlation=float(attrs["correlation"]),
                   correlation_unmoved=float(attrs["correlation_unmoved"]), bounded=bool(attrs["bounded"]))

    def as_attrs(self) -> dict[str, float]:
        return {"rows": round(float(self.rows), 2), "cols": round(float(self.cols), 2), "bounded": self.bounded,
                "correlation": round(self.correlation, 3), "correlation_unmoved": round(self.correlation_unmoved, 3)}


def _high_pass(image: np.ndarray) -> np.ndarray:
    return image - uniform_filter(image, _HIGH_PASS_SIZE, mode="nearest")


def _peak(values: np.ndarray, k: int) -> float:
    """Sub-sample position of the maximum at index k of a 1-D profile (parabola through its neighbours)."""
    if 0 < k < len(values) - 1:
        curvature = values[k - 1] - 2 * values[k] + values[k + 1]
        if curvature < 0:
            return k + 0.5 * (values[k - 1] - values[k + 1]) / curvature
    return float(k)


def nominal_block_offset(ratio: int) -> float:
    """The block offset (in PAN pixels) at which a pair made by Wald's degradation matches best: `decimate` keeps
    pixel ratio//2 of each block, whose centre lies ratio//2 - (ratio-1)/2 pixels past the block's centre."""
    return ratio // 2 - (ratio - 1) / 2


def ms_offset(pan: np.ndarray, ms_lr: np.ndarray, ratio: int, search: int | None = None,
              window: int | None = None) -> MSOffset:
    """Measure the MS's offset from its nominal place on the PAN grid (see the module doc), in PAN pixels.

    `search` bounds the whole-pixel shifts tried (default 3 MS pixels, at least 12 PAN pixels); `window` measures
    on the central window of at most that many MS pixels a side (a rigid misregistration is the same everywhere,
    while the cost grows with the area). Non-finite pixels are replaced by the image mean so that nodata borders do
    not match. Needs an MS of at least about 24 x 24 pixels (32 at ratio 2)."""
    search = max(3 * ratio, 12) if search is None else int(search)
    if window is not None:
        pan, ms_lr = central_window(pan, ms_lr, ratio, window)
    pan = np.nan_to_num(np.asarray(pan, dtype=np.float64), nan=float(np.nanmean(pan)))
    intensity = np.asarray(ms_lr, dtype=np.float64).mean(axis=0)
    intensity = _high_pass(np.nan_to_num(intensity, nan=float(np.nanmean(intensity))))
    h, w = intensity.shape
    margin = search // ratio + 1 + _HIGH_PASS_SIZE
    if min(h, w) - 2 * margin < 8:
        raise BadInput(f"MS of {h}x{w} pixels is too small to measure its registration (search {search} px)")
    # Mean of the ratio x ratio PAN block whose top-left pixel is (y, x), from a summed-area table.
    sums = np.pad(pan, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    r = ratio
    blocks = (sums[r:, r:] - sums[:-r, r:] - sums[r:, :-r] + sums[:-r, :-r]) / (r * r)
    rows, cols = np.arange(margin, h - margin), np.arange(margin, w - margin)
    rows = rows[rows * r + search < blocks.shape[0]]
    cols = cols[cols * r + search < blocks.shape[1]]
    target = intensity[np.ix_(rows, cols)].ravel()
    shifts = np.arange(-search, search + 1)
    correlation = np.empty((len(shifts), len(shifts)))
    for a, dy in enumerate(shifts):
        for b, dx in enumerate(shifts):
            moved = _high_pass(blocks[np.ix_(rows * r + dy, cols * r + dx)])
            correlation[a, b] = np.corrcoef(moved.ravel(), target)[0, 1]
    a, b = np.unravel_index(int(np.nanargmax(correlation)), correlation.shape)
    nominal = nominal_block_offset(ratio)
    return MSOffset(rows=_peak(correlation[:, b], a) - search - nominal,
                    cols=_peak(correlation[a, :], b) - search - nominal,
                    correlation=float(correlation[a, b]), correlation_unmoved=float(correlation[search, search]),
                    bounded=bool(0 < a < len(shifts) - 1 and 0 < b < len(shifts) - 1))


def measured_offset(pan: np.ndarray, ms_lr: np.ndarray, ratio: int, window: int | None = None) -> MSOffset | None:
    """`ms_offset`, or None when the MS is too small to measure."""
    try:
        return ms_offset(pan, ms_lr, ratio, window=window)
    except ValueError:
        return None


def misregistration_warning(offset: MSOffset | None, ratio: int) -> str | None:
    """A warning when the MS lies three quarters of an MS pixel or more off its place on the PAN grid (None
    otherwise): well beyond what the measurement and the sensors' own conventions blur."""
    if offset is None or max(abs(offset.rows), abs(offset.cols)) < 0.75 * ratio:
        return None
    far = "" if offset.bounded else "beyond the measured range, at least "
    return (f"the MS lies {far}{offset.rows:+.1f}, {offset.cols:+.1f} PAN pixels (rows, cols) off its place on the PAN "
            f"grid, measured on the images (correlation {offset.correlation_unmoved:.2f} as given, "
            f"{offset.correlation:.2f} moved back): sharpened detail will sit beside its edges; co-register the files")


def coregistration_crop(offset: MSOffset, ratio: int, target: tuple[int, int] = (0, 0)
                        ) -> tuple[tuple[int, int], tuple[int, int]]:
    """((PAN first row, first col), (MS first row, first col)) of the crop that leaves the MS within half a PAN
    pixel of `target` PAN pixels off its nominal place (0, 0: in place): the PAN moves by whole PAN pixels, the MS
    by whole MS pixels."""
    starts = []
    for value, wanted in zip((offset.rows, offset.cols), target):
        shift = int(np.round(value - wanted))     # PAN pixels the PAN must move to follow the MS
        ms_start = -(-max(0, -shift) // ratio)    # whole MS pixels dropped so the PAN start is not negative
        starts.append((shift + ratio * ms_start, ms_start))
    (pan_row, ms_row), (pan_col, ms_col) = starts
    return (pan_row, pan_col), (ms_row, ms_col)


def coregister(pair: PansharpeningPair, search: int | None = None, target: tuple[int, int] = (0, 0),
               offset: MSOffset | None = None) -> tuple[PansharpeningPair, MSOffset]:
    """`pair` cropped so that its MS sits within half a PAN pixel of its nominal place (see the module doc), or of
    `target` PAN pixels off it (a misregistered copy of a scene, for training), and the offset measured before
    (or `offset`, when already measured). A pair already there, one whose offset could not be bounded (peak on the
    edge of the search) or one with a reference (its PAN and reference share a grid) is returned as it is."""
    offset = offset or ms_offset(pair.pan, pair.ms_lr, pair.ratio, search)
    (pan_row, pan_col), (ms_row, ms_col) = coregistration_crop(offset, pair.ratio, target)
    if pair.gt is not None or not offset.bounded or (pan_row, pan_col, ms_row, ms_col) == (0, 0, 0, 0):
        return pair, offset
    r = pair.ratio
    ms_rows = min(pair.ms_lr.shape[1] - ms_row, (pair.pan.shape[0] - pan_row) // r)
    ms_cols = min(pair.ms_lr.shape[2] - ms_col, (pair.pan.shape[1] - pan_col) // r)
    pan = pair.pan[pan_row: pan_row + ms_rows * r, pan_col: pan_col + ms_cols * r]
    ms_lr = pair.ms_lr[:, ms_row: ms_row + ms_rows, ms_col: ms_col + ms_cols]
    aim = "" if target == (0, 0) else f" to {target[0]:+d}, {target[1]:+d}"
    note = (f"co-registered{aim}: MS measured {offset.rows:+.2f}, {offset.cols:+.2f} PAN px off; PAN cropped from "
            f"({pan_row}, {pan_col}), MS from ({ms_row}, {ms_col}); georeferencing dropped")
    return dataclasses.replace(pair, pan=np.ascontiguousarray(pan), ms_lr=np.ascontiguousarray(ms_lr), lms=None,
                               pan_transform=None, ms_transform=None, notes=(*pair.notes, note)), offset

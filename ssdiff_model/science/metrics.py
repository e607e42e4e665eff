"""Pansharpening quality indexes, number for number with the community's MATLAB toolbox (Vivone et al.).

Reduced resolution (fused image against a ground truth, Wald's protocol): SAM, ERGAS, SCC, Q (Q_avg) and Q2n, as
the toolbox's indexes_evaluation.m computes them. Full resolution (fused image against the MS/PAN pair it came
from): D_lambda (the MTF-based D_lambda_K), D_s and HQNR, as HQNR.m computes them.

All images are channel-first (B, H, W) arrays in digital numbers. Every block-wise index is computed for all blocks
at once (reshapes and cumulative sums), so a 512x512x8 image takes a fraction of a second.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import correlate1d

from ssdiff_model.errors import BadInput
from ssdiff_model.science.imresize import imresize
from ssdiff_model.science.resample import check_ratio, interp23tap, mtf_filter

__all__ = ["BORDER_CUT", "UNIT_SCALE_BITS", "block_uqi", "d_lambda_k", "d_s", "ergas", "full_resolution",
           "index_scale", "q2n", "q2n_blocks", "q_average", "q_map", "reduced_resolution", "sam", "sam_angles", "scc",
           "sobel_magnitude"]

# indexes_evaluation.m's dim_cut: I(dim_cut:end-dim_cut) in MATLAB's 1-based indexing drops 20 leading and 21
# trailing pixels.
BORDER_CUT = 21


# ----------------------------------------------------------------------------------------------------------------
# Input checks
# ----------------------------------------------------------------------------------------------------------------

def _as_image(array, name: str) -> np.ndarray:
    image = np.asarray(array, dtype=np.float64)
    if image.ndim != 3:
        raise BadInput(f"{name} must be a channel-first (B, H, W) array, got shape {image.shape}")
    if not np.all(np.isfinite(image)):
        raise BadInput(f"{name} contains NaN or infinite values")
    return image


def _same_shape(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise BadInput(f"{name_a} has shape {a.shape} but {name_b} has shape {b.shape}; they must match")


# ----------------------------------------------------------------------------------------------------------------
# Q2n (q2n.m, onions_quality.m, onion_mult.m, onion_mult2D.m, norm_blocco.m)
# ----------------------------------------------------------------------------------------------------------------

def _conjugate(onion: np.ndarray) -> np.ndarray:
    """Hypercomplex conjugate along axis 0: keep the real part, negate the imaginary parts."""
    return np.concatenate([onion[:1], -onion[1:]])


def _onion_mult(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Cayley-Dickson product of hypercomplex numbers stored along axis 0 (onion_mult.m and onion_mult2D.m).

    The other axes broadcast, so one call multiplies every pixel of every block.
    """
    n = p.shape[0]
    if n == 1:
        return p * q
    half = n // 2
    a, b = p[:half], _conjugate(p[half:])
    c, d = q[:half], _conjugate(q[half:])
    first = _onion_mult(a, c) - _onion_mult(d, _conjugate(b))
    second = _onion_mult(_conjugate(a), d) + _onion_mult(c, b)
    return np.concatenate([first, second])


def _multiplication_table(n: int) -> np.ndarray:
    """(n, n, n) table c with (e_i * e_j)_k = c[k, i, j] for the hypercomplex units e_i of _onion_mult."""
    units = np.eye(n)
    return _onion_mult(units[:, :, None], units[:, None, :])


def _pad_symmetric_to_blocks(image: np.ndarray, block: int) -> np.ndarray:
    """q2n.m's padding: extend bottom and right by mirroring the last rows/columns (edge pixel included)."""
    height, width = image.shape[-2:]
    extra_rows = -height % block
    extra_columns = -width % block
    if extra_rows > height or extra_columns > width:
        raise BadInput(f"images of {height}x{width} pixels are too small for {block}x{block} blocks")
    return np.pad(image, ((0, 0), (0, extra_rows), (0, extra_columns)), mode="symmetric")


def _to_uint16_values(image: np.ndarray) -> np.ndarray:
    """MATLAB's uint16(): round half away from zero and saturate to [0, 65535] (kept as float64 for the maths)."""
    return np.clip(np.sign(image) * np.floor(np.abs(image) + 0.5), 0, 65535)


def _blocks(image: np.ndarray, block: int) -> np.ndarray:
    """(B, H, W) with H, W multiples of `block` -> (B, number of blocks, block*block), blocks in row-major order."""
    bands, height, width = image.shape
    tiled = image.reshape(bands, height // block, block, width // block, block)
    return tiled.transpose(0, 1, 3, 2, 4).reshape(bands, -1, block * block)


def _onions_quality(reference: np.ndarray, fused: np.ndarray, block: int) -> np.ndarray:
    """Hypercomplex Q of every block (onions_quality.m): (N, blocks, pixels) x2 -> (N, blocks)."""
    n = block * block
    unbiased = n / (n - 1)
    # norm_blocco.m: standardise each band of the reference block (std2 is the N-1 one); the fused block is
    # standardised with the reference's mean and deviation.
    mean = reference.mean(axis=2, keepdims=True)
    std = reference.std(axis=2, ddof=1, keepdims=True)
    std = np.where(std == 0, np.finfo(np.float64).eps, std)
    ref = (reference - mean) / std + 1
    # onions_quality.m skips the division when the reference band's mean is exactly 0.
    fus = np.where(mean == 0, fused - mean + 1, (fused - mean) / std + 1)
    fus = _conjugate(fus)

    m1 = ref.mean(axis=2)
    m2 = fus.mean(axis=2)
    mod_m1_sq = (m1**2).sum(axis=0)
    mod_m2_sq = (m2**2).sum(axis=0)
    int1 = unbiased * (ref**2).sum(axis=0).mean(axis=1)
    int2 = unbiased * (fus**2).sum(axis=0).mean(axis=1)
    termine3 = int1 + int2 - unbiased * (mod_m1_sq + mod_m2_sq)
    mean_bias = 2 * np.sqrt(mod_m1_sq) * np.sqrt(mod_m2_sq) / (mod_m1_sq + mod_m2_sq)

    # Mean over pixels of the pixel-wise product ref * fus: the product is bilinear, so it is the multiplication
    # table applied to the blocks' band cross-moments (one batched matrix product instead of 2^n pixel-wise ones).
    cross_moments = np.matmul(ref.transpose(1, 0, 2), fus.transpose(1, 2, 0)) / n
    qu = np.einsum("kij,bij->kb", _multiplication_table(ref.shape[0]), cross_moments)
    qm = _onion_mult(m1, m2)
    flat = termine3 == 0
    cbm = 2 / np.where(flat, 1.0, termine3)
    q = unbiased * (qu - qm) * mean_bias * cbm
    # Blocks where neither image varies score their mean bias alone, which onions_quality.m stores in the last
    # hypercomplex component.
    flat_q = np.zeros_like(q)
    flat_q[-1] = mean_bias
    return np.where(flat, flat_q, q)


def q2n(reference: np.ndarray, fused: np.ndarray, block: int = 32) -> float:
    """Q2^n of `fused` against `reference` (q2n.m with Q_shift = Q_blocks_size = block).

    Both images are padded to whole blocks, cast to uint16 like the toolbox (rounding, saturating: fractional or
    negative values are lost on purpose, to match its figures), and their bands padded with zeros to a power of 2.
    """
    return float(q2n_blocks(reference, fused, block).mean())


def q2n_blocks(reference: np.ndarray, fused: np.ndarray, block: int = 32) -> np.ndarray:
    """The Q2^n of every block (row-major), which `q2n` averages: a window whose edges lie on the block grid (or
    on the image's bottom/right edge, with at least one block's worth of rows and columns) gives exactly the
    values of its blocks in the whole image, so windowed sums add up to the whole-image figure.
    """
    reference = _to_uint16_values(_pad_symmetric_to_blocks(reference, block))
    fused = _to_uint16_values(_pad_symmetric_to_blocks(fused, block))
    bands = reference.shape[0]
    missing = 2 ** math.ceil(math.log2(bands)) - bands
    if missing:
        zeros = np.zeros((missing,) + reference.shape[1:])
        reference = np.concatenate([reference, zeros])
        fused = np.concatenate([fused, zeros])
    # All-zero reference blocks give 0/0 (NaN) in the toolbox too; numpy need not warn about it.
    with np.errstate(invalid="ignore", divide="ignore"):
        q = _onions_quality(_blocks(reference, block), _blocks(fused, block), block)
    return np.sqrt((q**2).sum(axis=0))


# ----------------------------------------------------------------------------------------------------------------
# Reduced-resolution indexes (indexes_evaluation.m)
# ----------------------------------------------------------------------------------------------------------------

def sam(reference: np.ndarray, fused: np.ndarray) -> float:
    """Mean spectral angle in degrees over pixels where neither spectrum is zero (SAM.m)."""
    return float(np.degrees(sam_angles(reference, fused).mean()))


def sam_angles(reference: np.ndarray, fused: np.ndarray) -> np.ndarray:
    """The spectral angle (radians) of every pixel where neither spectrum is zero, which `sam` averages."""
    dot = (reference * fused).sum(axis=0)
    norms = np.sqrt((reference**2).sum(axis=0) * (fused**2).sum(axis=0))
    valid = norms != 0
    # MATLAB keeps real(acos(x)): a cosine rounded just beyond +-1 counts as 0 or 180 degrees, as clipping gives.
    cosine = np.clip(dot[valid] / norms[valid], -1, 1)
    return np.arccos(cosine)


def ergas(reference: np.ndarray, fused: np.ndarray, ratio: int) -> float:
    """ERGAS.m: 100/ratio * sqrt(mean over bands of MSE / mean(reference)^2)."""
    mse = ((reference - fused) ** 2).mean(axis=(1, 2))
    return float(100 / ratio * np.sqrt((mse / reference.mean(axis=(1, 2)) ** 2).mean()))


def _sobel_magnitude(image: np.ndarray) -> np.ndarray:
    """SCC.m's edge map: Sobel magnitude of the image without its 1-pixel frame, with imfilter's zero padding.

    fspecial('sobel') = [1 2 1; 0 0 0; -1 -2 -1] is the outer product of [1 0 -1] (down the rows) and [1 2 1]
    (along them); its transpose gives the other direction. Both are applied separably (correlation, as imfilter).
    """
    return sobel_magnitude(image[:, 1:-1, 1:-1])


def sobel_magnitude(inner: np.ndarray) -> np.ndarray:
    """Sobel magnitude of `inner` (B, H, W) with zero padding: given a window with a 1-pixel frame of its
    neighbours (zeros beyond the image's inner part), its interior is the whole image's edge map there."""
    smooth, derive = [1.0, 2.0, 1.0], [1.0, 0.0, -1.0]
    vertical = correlate1d(correlate1d(inner, smooth, axis=2, mode="constant"), derive, axis=1, mode="constant")
    horizontal = correlate1d(correlate1d(inner, smooth, axis=1, mode="constant"), derive, axis=2, mode="constant")
    return np.sqrt(vertical**2 + horizontal**2)


def scc(reference: np.ndarray, fused: np.ndarray) -> float:
    """Spatial correlation coefficient of the Sobel edge magnitudes of all bands together (SCC.m)."""
    edges_fused = _sobel_magnitude(fused)
    edges_reference = _sobel_magnitude(reference)
    return float(
        (edges_fused * edges_reference).sum()
        / np.sqrt((edges_fused**2).sum())
        / np.sqrt((edges_reference**2).sum())
    )


def _window_sums(image: np.ndarray, window: int) -> np.ndarray:
    """Sums over every `window` x `window` window fully inside the image (filter2(ones, x, 'valid')), over the
    last two axes: differences of cumulative sums along one axis, then along the other. numpy's cumsum is several
    times faster along contiguous rows, so the second pass runs on a transposed copy."""
    def along_rows(array: np.ndarray) -> np.ndarray:
        totals = np.cumsum(array, axis=-1)
        sums = totals[..., window - 1:].copy()
        sums[..., 1:] -= totals[..., :-window]
        return sums

    horizontal = along_rows(image)
    return along_rows(np.ascontiguousarray(horizontal.swapaxes(-1, -2))).swapaxes(-1, -2)


def q_average(reference: np.ndarray, fused: np.ndarray, window: int = 32) -> float:
    """Universal image quality index (Wang-Bovik) over sliding 32x32 windows, averaged over bands (Q.m, img_qi.m).

    Q.m always calls img_qi with 32, whatever block size Q2n uses.
    """
    if min(reference.shape[1:]) < window:
        raise BadInput(f"images of {reference.shape[1:]} pixels are smaller than the {window}x{window} Q window")
    return float(q_map(reference, fused, window).mean(axis=(1, 2)).mean())


def q_map(reference: np.ndarray, fused: np.ndarray, window: int = 32) -> np.ndarray:
    """The UIQI of every `window` x `window` window fully inside the images, per band: (B, H - window + 1,
    W - window + 1), which `q_average` averages (over positions, then bands)."""
    n = window * window
    # Window sums of values centred on one integer: (co)variances are unchanged, integer data stays exact in the
    # cumulative sums (as in filter2), and float data keeps its precision. (A window of the image centres on its
    # own mean: the same values up to rounding.)
    offset = np.round(reference.mean())
    x, y = reference - offset, fused - offset
    sum_x, sum_y, sum_xy, sum_squares = _window_sums(np.stack([x, y, x * y, x * x + y * y]), window)
    covariance_term = n * sum_xy - sum_x * sum_y
    variance_term = n * sum_squares - sum_x**2 - sum_y**2
    sum_x, sum_y = sum_x + n * offset, sum_y + n * offset
    product_of_sums = sum_x * sum_y
    sum_of_squared_sums = sum_x**2 + sum_y**2
    numerator = 4 * covariance_term * product_of_sums
    denominator = variance_term * sum_of_squared_sums
    quality = np.ones_like(denominator)
    # img_qi.m's special cases: flat windows score on their means alone; all-zero windows score 1.
    flat = (variance_term == 0) & (sum_of_squared_sums != 0)
    quality[flat] = 2 * product_of_sums[flat] / sum_of_squared_sums[flat]
    regular = denominator != 0
    quality[regular] = numerator[regular] / denominator[regular]
    return quality


# Float data without a bit depth (scaled to [0, 1], or reflectance) are put on an 11-bit DN scale for the indexes.
UNIT_SCALE_BITS = 11


def index_scale(bits: int | None, full_scale: float) -> tuple[int, float]:
    """(bits, factor): multiply a scene's values (its own units, `full_scale` at the top) by `factor` to get the
    digital numbers the toolbox's indexes expect at `bits`. Integer data with a bit depth are DN already; float data
    without one go on the 11-bit scale, since Q2n casts to uint16 as the toolbox does and would round reflectance
    in percent, or values in [0, 1], to a handful of levels."""
    if bits and 1 <= int(bits) <= 16:
        return int(bits), 1.0
    return UNIT_SCALE_BITS, (2.0**UNIT_SCALE_BITS - 1) / float(full_scale)


def reduced_resolution(fused, reference, ratio, bits, cut_bounds=0, block=32) -> dict[str, float]:
    """SAM (degrees), ERGAS, SCC, Q (band-averaged UIQI) and Q2n of `fused` against `reference` (indexes_evaluation.m).

    `fused` and `reference` are (B, H, W) arrays in digital numbers; `ratio` the PAN/MS scale ratio (ERGAS);
    `bits` the radiometric resolution (checked only: like the toolbox's default run, values are not clipped to
    [0, 2^bits]); `cut_bounds` 1 drops a 21-pixel frame first (the toolbox's default for whole scenes); `block`
    the Q2n block size.
    """
    fused = _as_image(fused, "fused")
    reference = _as_image(reference, "reference")
    _same_shape(fused, reference, "fused", "reference")
    ratio = check_ratio(ratio)
    if isinstance(bits, bool) or not float(bits).is_integer() or not 1 <= bits <= 16:
        raise BadInput(f"bits must be an integer radiometric resolution between 1 and 16, got {bits!r}")
    if cut_bounds not in (0, 1, False, True):
        raise BadInput(f"cut_bounds must be 0 or 1, got {cut_bounds!r}")
    if not (isinstance(block, (int, np.integer)) and block >= 2):
        raise BadInput(f"block must be an integer of at least 2, got {block!r}")
    if cut_bounds:
        if min(fused.shape[1:]) <= 2 * BORDER_CUT:
            raise BadInput(f"images of {fused.shape[1:]} pixels are too small to cut a {BORDER_CUT}-pixel border")
        crop = (slice(None), slice(BORDER_CUT - 1, -BORDER_CUT), slice(BORDER_CUT - 1, -BORDER_CUT))
        fused, reference = fused[crop], reference[crop]
    return {
        "SAM": sam(reference, fused),
        "ERGAS": ergas(reference, fused, ratio),
        "SCC": scc(reference, fused),
        "Q": q_average(reference, fused),
        "Q2n": q2n(reference, fused, block),
    }


# ----------------------------------------------------------------------------------------------------------------
# Full-resolution indexes (HQNR.m, D_lambda_K.m, D_s.m)
# ----------------------------------------------------------------------------------------------------------------

def _block_uqi(images: np.ndarray, partner: np.ndarray, block: int) -> np.ndarray:
    """Mean over distinct block x block blocks of the UIQI of each band against `partner` (D_s.m's blockproc + uqi).

    uqi uses MATLAB's cov (N-1 normalisation) and the plain means of the block. Returns one value per band.
    """
    return block_uqi(images, partner, block).mean(axis=1)


def block_uqi(images: np.ndarray, partner: np.ndarray, block: int) -> np.ndarray:
    """The UIQI of each band against `partner` in every distinct block: (B, blocks), which D_s averages."""
    x = _blocks(images, block)
    y = _blocks(np.broadcast_to(partner, images.shape), block)
    mean_x, mean_y = x.mean(axis=2), y.mean(axis=2)
    dx, dy = x - mean_x[..., None], y - mean_y[..., None]
    n = block * block
    covariance = (dx * dy).sum(axis=2) / (n - 1)
    variances = ((dx**2).sum(axis=2) + (dy**2).sum(axis=2)) / (n - 1)
    return 4 * covariance * mean_x * mean_y / variances / (mean_x**2 + mean_y**2)


def d_lambda_k(fused: np.ndarray, ms_expanded: np.ndarray, ratio: int, sensor, block: int = 32) -> float:
    """Spectral distortion D_lambda_K (D_lambda_K.m): 1 - Q2n between the MS upsampled to the PAN grid and the
    fused image low-passed with the sensor's MTF, i.e. what the MS sensor would have seen of the fused image."""
    return 1 - q2n(ms_expanded, mtf_filter(fused, sensor, ratio), block)


def d_s(fused: np.ndarray, ms_expanded: np.ndarray, pan: np.ndarray, ratio: int, block: int = 32,
        exponent: float = 1) -> float:
    """Spatial distortion D_s (D_s.m with its default "toolbox 1.0" option, as HQNR.m calls it: S=32, q=1).

    Per band, the block UIQI between the fused band and the PAN should equal the one between the upsampled MS band
    and the PAN degraded to MS scale (MATLAB's bicubic imresize, then interp23tap back up); D_s is the mean of
    their differences raised to `exponent` (D_s.m's q), to the power 1/exponent.
    """
    pan_low = interp23tap(imresize(pan, 1 / ratio)[None], ratio)[0]
    q_high = _block_uqi(fused, pan[None], block)
    q_low = _block_uqi(ms_expanded, pan_low[None], block)
    return float((np.abs(q_high - q_low) ** exponent).mean() ** (1 / exponent))


def full_resolution(fused, ms_lr, pan, ratio, sensor) -> dict[str, float]:
    """D_lambda (MTF-based D_lambda_K), D_s and HQNR of `fused` (B, H, W) made from `ms_lr` (B, H/ratio, W/ratio) and
    `pan` (H, W), in digital numbers, with `sensor` (a toolbox name such as "WV3", any case, or a Sensor) for the
    MTF. As in the toolbox, H and W must be multiples of the 32-pixel block, and `ms_lr` is expanded to the PAN grid
    with interp23tap (indexes_evaluation_FS.m's I_MS) before use.
    """
    fused = _as_image(fused, "fused")
    ms_lr = _as_image(ms_lr, "ms_lr")
    pan = np.asarray(pan, dtype=np.float64)
    if pan.ndim == 3 and pan.shape[0] == 1:
        pan = pan[0]
    if pan.ndim != 2:
        raise BadInput(f"pan must be an (H, W) array, got shape {pan.shape}")
    if not np.all(np.isfinite(pan)):
        raise BadInput("pan contains NaN or infinite values")
    ratio = check_ratio(ratio)
    block = 32
    if fused.shape[1:] != pan.shape:
        raise BadInput(f"fused has {fused.shape[1:]} pixels but pan has {pan.shape}; they must match")
    expected_lr = (fused.shape[0], fused.shape[1] // ratio, fused.shape[2] // ratio)
    if ms_lr.shape != expected_lr or fused.shape[1] % ratio or fused.shape[2] % ratio:
        raise BadInput(f"ms_lr has shape {ms_lr.shape} but fused {fused.shape} at ratio {ratio} needs {expected_lr}")
    if fused.shape[1] % block or fused.shape[2] % block:
        raise BadInput(f"fused has {fused.shape[1:]} pixels; full-resolution indexes need multiples of {block} "
                         f"(D_s.m's blocks)")
    ms_expanded = interp23tap(ms_lr, ratio)
    d_lambda = d_lambda_k(fused, ms_expanded, ratio, sensor, block)
    spatial = d_s(fused, ms_expanded, pan, ratio, block)
    return {"D_lambda": d_lambda, "D_s": spatial, "HQNR": (1 - d_lambda) * (1 - spatial)}

"""MTF-matched filters, the 23-tap interpolator and Wald's degradation, as the community's MATLAB toolbox does them.

Each function cites the toolbox .m file it reproduces (Vivone et al. 2020, DLPan-Toolbox `Tools/`). Arrays are
channel-first: MS images (B, H, W), PAN (H, W), float digital numbers.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage, signal

from ssdiff_model.errors import BadInput
from ssdiff_model.science.sensors import Sensor, get_sensor

__all__ = ["INTERP23_KERNEL", "KAISER_BETA", "MTF_KERNEL_SIZE", "central_window", "check_pair", "check_ratio",
           "decimate", "filter_replicate", "gaussian_fir", "interp23tap", "mtf_filter", "mtf_kernel",
           "pan_mtf_filter", "upsample_ms", "upsampling_method", "wald_degrade"]

MTF_KERNEL_SIZE = 41  # N = 41 in genMTF.m, MTF_PAN.m and LPfilterGauss.m
KAISER_BETA = 0.5  # MATLAB's kaiser(N) default

# interp23tap.m: half of the symmetric 23-tap polynomial interpolation kernel (Aiazzi et al. 2002), centre first.
_CDF23_HALF = 2.0 * np.array([0.5, 0.305334091185, 0, -0.072698593239, 0, 0.021809577942, 0, -0.005192756653,
                              0, 0.000807762146, 0, -0.000060081482])
INTERP23_KERNEL = np.concatenate([_CDF23_HALF[:0:-1], _CDF23_HALF])


def check_ratio(ratio) -> int:
    """The scale ratio as an int; ValueError unless it is an integer >= 2 (integers held in floats are fine)."""
    is_number = isinstance(ratio, (int, float, np.integer, np.floating)) and not isinstance(ratio, bool)
    if not is_number or not np.isfinite(ratio) or ratio != int(ratio) or int(ratio) < 2:
        raise BadInput(f"ratio must be an integer >= 2, got {ratio!r}")
    return int(ratio)


def _as_bands(image, name: str) -> np.ndarray:
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 3:
        raise BadInput(f"{name} must be (B, H, W), got shape {image.shape}")
    return image


def _as_plane(image, name: str) -> np.ndarray:
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2:
        raise BadInput(f"{name} must be (H, W), got shape {image.shape}")
    return image


def gaussian_fir(sigma: float, size: int = MTF_KERNEL_SIZE) -> np.ndarray:
    """The toolbox's FIR design: `fwind1(H / max(H), kaiser(N))` with H = `fspecial('gaussian', N, sigma)`.

    The sampled Gaussian is used as the desired *frequency* response (peak 1 at DC). fsamp2 turns it into an
    impulse response and fwind1 multiplies that by Huang's circular window: the 1-D Kaiser window interpolated
    linearly at the radius of each tap, zero outside the unit circle (MATLAB's fwind1.m, 2-argument form).
    """
    if size < 3 or size % 2 == 0:
        raise BadInput(f"size must be an odd integer >= 3, got {size}")
    offsets = np.arange(size) - (size - 1) / 2
    gaussian = np.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2 * sigma**2))
    gaussian[gaussian < np.finfo(float).eps * gaussian.max()] = 0  # fspecial drops negligible tails
    desired = gaussian / gaussian.max()  # the sum-normalisation of fspecial cancels here
    # fsamp2.m: for an odd size, rot90(fftshift(rot90(Hd,2)),2) is ifftshift; then fftshift(ifft2(.)) rotated by 180.
    impulse = np.real(np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(desired))))[::-1, ::-1]
    # Huang's window: radius on the grid t = linspace(-1, 1, N), window interpolated at it, zero beyond t = 1.
    t = np.linspace(-1.0, 1.0, size)
    radius = np.hypot(t[:, None], t[None, :])
    window = np.interp(radius, t, signal.windows.kaiser(size, KAISER_BETA))
    window[radius > 1] = 0
    return impulse * window


def mtf_kernel(gnyq: float, ratio: int, size: int = MTF_KERNEL_SIZE) -> np.ndarray:
    """(size, size) low-pass filter whose response at the MS Nyquist frequency (1/(2*ratio) cycles per pixel) is
    about `gnyq` (genMTF.m / MTF_PAN.m: sigma = sqrt(((N-1)*fcut/2)^2 / (-2 ln GNyq)), fcut = 1/ratio).

    Not renormalised after windowing, as in the toolbox: its sum is 1 to within 3e-3 (less for higher gains).
    """
    ratio = check_ratio(ratio)
    if not 0 < gnyq < 1:
        raise BadInput(f"gnyq must lie in (0, 1), got {gnyq!r}")
    fcut = 1.0 / ratio
    sigma = np.sqrt(((size - 1) * fcut / 2) ** 2 / (-2 * np.log(gnyq)))
    return gaussian_fir(sigma, size)


def filter_replicate(plane: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """MATLAB's `imfilter(plane, kernel, 'replicate')` (correlation, edges replicated), by FFT for speed."""
    half_rows, half_cols = kernel.shape[0] // 2, kernel.shape[1] // 2
    padded = np.pad(plane, ((half_rows, half_rows), (half_cols, half_cols)), mode="edge")
    return signal.fftconvolve(padded, kernel[::-1, ::-1], mode="valid")


def mtf_filter(image, sensor: str | Sensor, ratio: int) -> np.ndarray:
    """Filter each band of `image` (B, H, W) with the sensor's MS MTF (MTF.m: per-band genMTF, 'replicate')."""
    image = _as_bands(image, "image")
    gains = get_sensor(sensor).band_gains(image.shape[0])
    return np.stack([filter_replicate(band, mtf_kernel(gain, ratio)) for band, gain in zip(image, gains)])


def pan_mtf_filter(pan, sensor: str | Sensor, ratio: int) -> np.ndarray:
    """Filter `pan` (H, W) with the sensor's PAN MTF (MTF_PAN.m)."""
    pan = _as_plane(pan, "pan")
    return filter_replicate(pan, mtf_kernel(get_sensor(sensor).pan_gain, ratio))


def decimate(image: np.ndarray, ratio: int) -> np.ndarray:
    """Keep every `ratio`-th pixel of the last two axes, as MATLAB's `imresize(x, 1/ratio, 'nearest')` picks them:
    output pixel i (1-based) sits at input coordinate ratio*i - (ratio-1)/2, rounded up on ties, i.e. the 0-based
    pixels ratio//2, ratio//2 + ratio, ...
    """
    start = ratio // 2
    return image[..., start::ratio, start::ratio]


def interp23tap(image, ratio: int) -> np.ndarray:
    """Upsample `image` (B, h, w) to (B, h*ratio, w*ratio) with interp23tap.m.

    Each doubling step puts the samples on a zero grid, at odd positions on the first step and even positions on
    the later ones (which keeps the toolbox's half-pixel alignment), then filters rows and columns with the
    23-tap kernel with circular boundaries ('circular' in imfilter). The toolbox loops `ratio/2` times, which is
    log2(ratio) only for ratios 2 and 4; this loops log2(ratio) times, the evident intent, for 8, 16, ...
    """
    image = _as_bands(image, "image")
    ratio = check_ratio(ratio)
    steps = int(round(np.log2(ratio)))
    if 2**steps != ratio:
        raise BadInput(f"ratio must be a power of 2 for interp23tap, got {ratio}; use method='bicubic'")
    for step in range(steps):
        bands, rows, cols = image.shape
        upsampled = np.zeros((bands, 2 * rows, 2 * cols))
        offset = 1 if step == 0 else 0
        upsampled[:, offset::2, offset::2] = image
        upsampled = ndimage.correlate1d(upsampled, INTERP23_KERNEL, axis=1, mode="wrap")
        image = ndimage.correlate1d(upsampled, INTERP23_KERNEL, axis=2, mode="wrap")
    return image


def upsampling_method(ratio: int) -> str:
    """The toolbox's 23-tap interpolator where it exists (powers of 2), bicubic otherwise: how the project upsamples
    an MS by ``ratio`` (the network's input, the training examples, back-projection)."""
    return "interp23tap" if ratio & (ratio - 1) == 0 else "bicubic"


def upsample_ms(ms_lr, ratio: int, method: str = "interp23tap") -> np.ndarray:
    """Upsample an MS image (B, h, w) by `ratio`: "interp23tap" (the toolbox's, powers of 2) or MATLAB "bicubic"."""
    ratio = check_ratio(ratio)
    if method == "interp23tap":
        return interp23tap(ms_lr, ratio)
    if method == "bicubic":
        from ssdiff_model.science.imresize import imresize

        return imresize(_as_bands(ms_lr, "ms_lr"), ratio, method="bicubic")
    raise BadInput(f"method must be 'interp23tap' or 'bicubic', got {method!r}")


def check_pair(pan: np.ndarray, ms: np.ndarray, ratio: int, ms_name: str = "ms") -> None:
    """ValueError unless `pan` (H, W) is exactly `ratio` times the size of `ms` (B, h, w)."""
    if pan.shape != (ms.shape[1] * ratio, ms.shape[2] * ratio):
        raise BadInput(f"pan of shape {pan.shape} is not {ratio} times the size of {ms_name} {ms.shape[1:]} "
                         f"(expected {(ms.shape[1] * ratio, ms.shape[2] * ratio)})")


def central_window(pan: np.ndarray, ms: np.ndarray, ratio: int, ms_size: int,
                   *on_pan_grid: np.ndarray) -> tuple[np.ndarray, ...]:
    """The central window of at most `ms_size` x `ms_size` MS pixels: (pan, ms, *on_pan_grid) cropped to the same
    ground (`on_pan_grid`: (B, H, W) images on the PAN grid, such as a reference)."""
    (top, height), (left, width) = ((max(0, (n - ms_size) // 2), min(n, ms_size)) for n in ms.shape[1:])
    rows, cols = slice(top * ratio, (top + height) * ratio), slice(left * ratio, (left + width) * ratio)
    return (pan[rows, cols], ms[:, top: top + height, left: left + width],
            *(image[:, rows, cols] for image in on_pan_grid))


def wald_degrade(pan, ms, ratio: int, sensor: str | Sensor, pan_method: str = "mtf") -> tuple[np.ndarray, np.ndarray]:
    """Wald's protocol: degrade a full-resolution pair by `ratio` -> (pan_lr (H/r, W/r), ms_lr (B, h/r, w/r)).

    MS as resize_images.m: the sensor's MS MTF filter (designed for `ratio`) then nearest decimation. PAN with
    `pan_method="mtf"` (default): its own MTF filter (MTF_PAN.m, the PAN's Nyquist gain) then the same decimation,
    as BDSD_PC.m degrades the PAN; `pan_method="bicubic"`: MATLAB's `imresize(pan, 1/ratio)` as the DLPan-Toolbox's
    resize_images.m does.
    """
    ratio = check_ratio(ratio)
    pan = _as_plane(pan, "pan")
    ms = _as_bands(ms, "ms")
    check_pair(pan, ms, ratio)
    if ms.shape[1] % ratio or ms.shape[2] % ratio:
        raise BadInput(f"ms size {ms.shape[1:]} must be divisible by ratio {ratio}")
    ms_lr = decimate(mtf_filter(ms, sensor, ratio), ratio)
    if pan_method == "mtf":
        pan_lr = decimate(pan_mtf_filter(pan, sensor, ratio), ratio)
    elif pan_method == "bicubic":
        from ssdiff_model.science.imresize import imresize

        pan_lr = imresize(pan, 1 / ratio, method="bicubic")
    else:
        raise BadInput(f"pan_method must be 'mtf' or 'bicubic', got {pan_method!r}")
    return pan_lr, ms_lr

"""How fast is one SSDiff tile? Prints one JSON object.

    python bench/model_speed.py                      # CPU, fp32
    python bench/model_speed.py --device cuda --bf16

Measures, on 64x64 PAN tiles (16x16 MS, 8 bands, ratio 4) with an untrained network: forward latency at batch 1
and 8, a full 10-step DDIM sample, peak memory, the machine's large-GEMM rate, the model's FLOPs per tile, the
fraction of the GEMM rate the model reaches at batch 8, and the speed-up of the fused attention kernel over a
spatial projection that builds the N x N matrix explicitly. Timings are medians of repeated runs after warm-up.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import resource
import statistics
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from ssdiff_model.model.fusion import APFM
from ssdiff_model.model.network import build_network

TILE, BANDS, RATIO, BATCH = 64, 8, 4, 8
# torch's flop counter knows the CUDA SDPA kernels but not the CPU one; count it with the same formula,
# 4 * N^2 * d_h per head (Q K^T and P V, 2 FLOPs per multiply-add).
CPU_SDPA = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu


def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    batch, heads, q_len, d_qk = query_shape
    k_len, d_v = key_shape[2], value_shape[3]
    return 2 * batch * heads * q_len * k_len * d_qk + 2 * batch * heads * q_len * k_len * d_v


def explicit_spatial_projection(ya, yb, xc):
    """The spatial projection as written on paper: the full (N x N) softmax matrix per head. Benchmark only."""
    attn = (ya @ yb.transpose(-2, -1)).mul_(ya.shape[-1] ** -0.5).softmax(dim=-1)
    return attn @ xc


@contextlib.contextmanager
def explicit_attention(net):
    """Every APFM block of `net` builds the N x N matrix while inside this block."""
    blocks = [m for m in net.modules() if isinstance(m, APFM)]
    for block in blocks:
        block.spatial_projection = explicit_spatial_projection  # shadows the class's fused version
    try:
        yield
    finally:
        for block in blocks:
            del block.spatial_projection


def keep_freed_memory() -> bool:
    """Ask glibc to serve tensors up to 32 MiB from its heap and not hand freed memory back to the kernel.

    By default every large activation is a fresh mmap, and first-touching its pages costs thousands of page
    faults per forward pass (about 2% of the CPU time here). A long-lived inference worker wants the same.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    return all(libc.mallopt(option, value) == 1 for option, value in
               ((m_mmap_threshold, 32 * 2**20), (m_trim_threshold, 2**30), (m_top_pad, 256 * 2**20)))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn, device, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_flops_per_second(device, dtype, repeats: int, size: int = 4096) -> float:
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    return 2 * size**3 / median_seconds(lambda: a @ b, device, repeats)


def tile_inputs(batch: int, device, generator: torch.Generator):
    def rand(*shape):
        return torch.rand(*shape, generator=generator).to(device)
    ms = rand(batch, BANDS, TILE // RATIO, TILE // RATIO)
    lms = F.interpolate(ms, scale_factor=RATIO, mode="bicubic")
    x_t = torch.randn(batch, BANDS, TILE, TILE, generator=generator).to(device)
    t = torch.full((batch,), 500, dtype=torch.int64, device=device)
    return x_t, t, rand(batch, 1, TILE, TILE), lms, ms


def count_flops(net, inputs) -> tuple[int, int, bool]:
    """Model FLOPs for one forward, those of attention, and whether the CPU SDPA op needed our own formula."""
    counter = FlopCounterMode(display=False, custom_mapping={CPU_SDPA: _cpu_sdpa_flops})
    with counter:
        net(*inputs)
    counts = counter.get_flop_counts()["Global"]
    attention = sum(n for op, n in counts.items() if "scaled_dot_product" in str(op))
    return counter.get_total_flops(), attention, CPU_SDPA in counts


def ddim_seconds_per_tile(net, inputs, device, repeats: int, warmup: int) -> tuple[float, str]:
    x_t, _, pan, lms, ms = inputs
    try:
        from ssdiff_model.model.diffusion import GaussianDiffusion
    except ImportError:
        GaussianDiffusion = None
    if GaussianDiffusion is not None:
        diffusion = GaussianDiffusion()
        how = "GaussianDiffusion.ddim_sample"

        def run():
            diffusion.ddim_sample(net, pan, lms, ms, steps=10, noise=x_t)
    else:
        how = "10 network calls at t = 900..0"
        steps = [torch.full((x_t.shape[0],), t, dtype=torch.int64, device=device) for t in range(900, -1, -100)]

        def run():
            for t in steps:
                net(x_t, t, pan, lms, ms)
    return median_seconds(run, device, repeats, warmup) / x_t.shape[0], how


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true", help="autocast to bfloat16")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--architecture", choices=("release", "legacy"), default="release",
                        help="the released network (default) or the project's first layout")
    args = parser.parse_args()

    device = torch.device(args.device)
    load_before = os.getloadavg()[0]
    if args.threads:
        torch.set_num_threads(args.threads)
    # Softmax tails underflow to denormals, which x86 cores process at a fraction of the normal rate.
    flush_denormal = torch.set_flush_denormal(True)
    allocator_tuned = device.type == "cpu" and keep_freed_memory()
    dtype = torch.bfloat16 if args.bf16 else torch.float32
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    net = build_network(dict(bands=BANDS, ratio=RATIO, architecture=args.architecture)).to(device).eval()
    small, large = tile_inputs(1, device, generator), tile_inputs(BATCH, device, generator)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def forward(inputs):
        return lambda: net(*inputs)

    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=args.bf16):
        flops_per_tile, attention_flops, sdpa_custom = count_flops(net, small)
        t_b1 = median_seconds(forward(small), device, args.repeats)
        t_large = median_seconds(forward(large), device, args.repeats)
        matmul_rate = matmul_flops_per_second(device, dtype, args.repeats)  # right after, under the same load
        ddim_b1, ddim_how = ddim_seconds_per_tile(net, small, device, repeats=3, warmup=1)
        ddim_large, _ = ddim_seconds_per_tile(net, large, device, repeats=3, warmup=0)  # already warm at batch 8
        t_b16 = median_seconds(forward(tile_inputs(16, device, generator)), device, repeats=1, warmup=1)
        # Peak over batches 1, 8 and 16 and the DDIM chains; read before the explicit-attention run, whose
        # N x N matrices (1 GiB each at batch 8) would dominate.
        peak_memory = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
                       else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)

        with explicit_attention(net):
            t_explicit = median_seconds(forward(large), device, repeats=3, warmup=1)

    achieved = flops_per_tile * BATCH / t_large
    result = {
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "dtype": str(dtype).removeprefix("torch."),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        # Other processes on the cores make every parallel region wait for a descheduled thread: compare runs
        # only at a low load, or with --threads 1, which suffers far less from it.
        "load_average_1min_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "tile": f"{TILE}x{TILE} PAN, {BANDS} bands, ratio {RATIO}",
        "architecture": args.architecture,
        "parameters": sum(p.numel() for p in net.parameters()),
        "tile_forward_ms_b1": round(t_b1 * 1e3, 2),
        f"tile_forward_ms_b{BATCH}": round(t_large * 1e3, 2),
        f"tile_forward_ms_per_tile_b{BATCH}": round(t_large / BATCH * 1e3, 2),
        "tile_forward_ms_b16": round(t_b16 * 1e3, 2),
        "ddim10_ms_per_tile_b1": round(ddim_b1 * 1e3, 1),
        f"ddim10_ms_per_tile_b{BATCH}": round(ddim_large * 1e3, 1),
        "ddim10_how": ddim_how,
        "flops_per_tile_forward": flops_per_tile,
        "attention_flops_per_tile_forward": attention_flops,
        "sdpa_flops": ("own formula 4*N^2*d_h per head for aten._scaled_dot_product_flash_attention_for_cpu "
                       "(not registered in torch's flop counter)") if sdpa_custom else "torch flop counter",
        "matmul_flops_per_s": round(matmul_rate),
        f"achieved_flops_per_s_b{BATCH}": round(achieved),
        "fraction_of_flop_limit": round(achieved / matmul_rate, 3),
        f"explicit_attention_ms_b{BATCH}": round(t_explicit * 1e3, 2),
        "speedup_vs_explicit_attention": round(t_explicit / t_large, 2),
        "peak_memory_mib": round(peak_memory / 2**20, 1),
        "peak_memory_how": "torch.cuda.max_memory_allocated" if device.type == "cuda" else "ru_maxrss (process)",
        "flush_denormal": flush_denormal,
        "glibc_heap_kept": allocator_tuned,
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

"""What the memory benches share: each measurement runs in a fresh process of the bench's own script, so every
figure is that process's peak resident memory, untouched by what an earlier measurement allocated."""
from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

__all__ = ["peak_rss_mb", "run_script"]

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # KiB on Linux


def run_script(script: str, *args: str) -> str:
    """Run `script` with `args` in a fresh Python process from the project root; its standard output.

    Raises:
        RuntimeError: it failed (with the end of its standard error).
    """
    done = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, cwd=PROJECT_ROOT)
    if done.returncode:
        raise RuntimeError(f"{' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return done.stdout

"""infra.entry.run_entry: every entry point's outcome, output and exit status come from it."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
from conftest import PROJECT_ROOT

from infra.entry import run_entry
from infra.failures import EXIT_BAD_INPUT, EXIT_BUSY, EXIT_FAILED, RunFailed
from ssdiff_model.errors import BadInput
from tiling.lock import StoreBusyError


def fail_with(error: BaseException):
    def work():
        raise error
    return work


def test_a_summary_goes_to_stdout_and_its_warnings_to_stderr(capsys):
    assert run_entry("ssdiff x", lambda: {"done": 1, "warnings": ["a guess"]}) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == {"done": 1, "warnings": ["a guess"]}
    assert err == "ssdiff x: warning: a guess\n"


@pytest.mark.parametrize("error, status, line", [
    (BadInput("pan.tif: 2 bands, expected 1"), EXIT_BAD_INPUT, "pan.tif: 2 bands, expected 1"),
    (FileNotFoundError(2, "No such file or directory", "ms.tif"), EXIT_BAD_INPUT, "ms.tif: No such file or directory"),
    (StoreBusyError("m.zarr: in use by run 7"), EXIT_BUSY, "m.zarr: in use by run 7"),
    (OSError(28, "No space left on device", "m.zarr"), EXIT_FAILED, "m.zarr: No space left on device"),
    (RunFailed("no actor could be placed in 5 s"), EXIT_FAILED, "no actor could be placed in 5 s"),
])
def test_expected_failures_are_one_line_and_their_exit_status(error, status, line, capsys):
    assert run_entry("ssdiff x", fail_with(error)) == status
    assert capsys.readouterr().err == f"ssdiff x: error: {line}\n"


def test_a_bugs_value_error_is_not_bad_input_and_keeps_its_traceback():
    """Only BadInput is bad input: a ValueError from a bug must surface as the failure it is, not as exit 2."""
    with pytest.raises(ValueError, match="broadcast"):
        run_entry("ssdiff x", fail_with(ValueError("operands could not be broadcast together")))


def test_the_status_of_a_summary_can_say_failed(capsys):
    assert run_entry("infra.reprocess", lambda: {"failed": 2}, status=lambda s: 1 if s["failed"] else 0) == 1


@pytest.mark.parametrize("how", ["SIGINT", "SIGTERM"])
def test_ctrl_c_and_sigterm_end_the_work_with_the_rerun_line_and_exit_1(how, tmp_path):
    """A real process interrupted mid-work: the work's cleanup runs (finally), the line says rerun, exit 1."""
    cleaned = tmp_path / "cleaned"
    script = textwrap.dedent(f"""
        import sys, time
        from infra.entry import run_entry
        def work():
            try:
                print("started", flush=True)
                time.sleep(60)
            finally:
                open({str(cleaned)!r}, "w").close()
        sys.exit(run_entry("ssdiff sharpen", work, rerun_hint="rerun the same command"))
    """)
    # As at a terminal: a shell's background job (nohup ... &, how CI may be started) inherits SIGINT ignored, and
    # Python then never turns it into KeyboardInterrupt; the child gets the default disposition back.
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, cwd=PROJECT_ROOT, env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert process.stdout.readline() == "started\n"
    process.send_signal(getattr(signal, how))
    _, err = process.communicate(timeout=60)
    assert process.returncode == EXIT_FAILED, err
    assert err.strip().endswith("ssdiff sharpen: interrupted; rerun the same command"), err
    assert cleaned.exists()

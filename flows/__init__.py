"""Prefect flows and the `ssdiff` command line."""
import os

# Prefect's ephemeral API gives its server 20 s to come up, but the first start on a machine creates and migrates its
# database, which takes longer than that on 2 cores under load: `make demo` on a fresh machine failed with "Timed out
# while attempting to connect to ephemeral Prefect API server". Read when prefect is first imported, so set here,
# before any flow module imports it; a value the user set wins.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

__all__ = ["cli", "evaluate", "export", "ingest", "pipeline", "release_import", "serve", "sharpen", "stac", "training",
           "training_flows"]

"""Serve the inbox watch on its cron schedule from one process, without a work pool (the local default).

    python -m flows.serve --inbox /data/inbox --outbox /data/outbox --checkpoint ssdiff-8band-r4
    python -m flows.serve --inbox s3://archive/inbox --outbox s3://archive/outbox --checkpoint ssdiff-8band-r4

The inbox and outbox are local folders or object-store prefixes (configured from AWS_ENDPOINT_URL,
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION only).

The same deployment, for a Prefect server with workers, is declared in infra/deploy/prefect.yaml.
"""
from __future__ import annotations

import argparse
from typing import Sequence

from prefect import serve
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy

from flows.pipeline import process_inbox

__all__ = ["WATCH_CONCURRENCY", "WATCH_CRON", "main", "watch_inbox_deployment"]

WATCH_CRON = "*/15 * * * *"
# One run at a time, and a run that comes due while one is going is cancelled rather than queued: the running one
# is already working through the inbox and the next tick takes what arrived meanwhile (as in infra/deploy/prefect.yaml).
WATCH_CONCURRENCY = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW)


def watch_inbox_deployment(inbox: str, outbox: str, checkpoint: str, cron: str = WATCH_CRON, **parameters):
    """The scheduled deployment of ``process_inbox`` for ``inbox`` -> ``outbox``."""
    return process_inbox.to_deployment(
        name="watch-inbox", cron=cron, concurrency_limit=WATCH_CONCURRENCY, tags=["ssdiff", "scheduled"],
        parameters={"inbox": inbox, "outbox": outbox, "checkpoint": checkpoint, **parameters})


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--inbox", required=True, help="folder or s3://bucket/prefix the scenes are dropped in")
    parser.add_argument("--outbox", required=True, help="folder or s3://bucket/prefix for the scene and mosaic stores")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--cron", default=WATCH_CRON, help=f"schedule (default {WATCH_CRON!r}: every 15 minutes)")
    parser.add_argument("--ray-address", help="Ray cluster to join (default: RAY_ADDRESS, else a local Ray)")
    args = parser.parse_args(argv)
    serve(watch_inbox_deployment(args.inbox, args.outbox, args.checkpoint, args.cron, ray_address=args.ray_address))


if __name__ == "__main__":
    main()

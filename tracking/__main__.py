"""``python -m tracking ui``: serve the MLflow UI on the project's store (see tracking/ui.py)."""

import argparse
import sys

from tracking.store import tracking_uri
from tracking.ui import serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tracking")
    sub = parser.add_subparsers(dest="command", required=True)
    ui = sub.add_parser("ui", help="serve the MLflow UI bound to 127.0.0.1")
    ui.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    ui.add_argument("--port", type=int, default=5000)
    ui.add_argument("--tracking-uri", help="default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db")
    ui.add_argument(
        "--artifacts-destination",
        metavar="DIR",
        help="store the artefacts clients upload here (a server for several "
        "machines); default: the store's own artefact locations",
    )
    args = parser.parse_args(argv)
    return serve(tracking_uri(args.tracking_uri), args.host, args.port, args.artifacts_destination)


if __name__ == "__main__":
    sys.exit(main())

"""Publish the output folder of a finished training run to a Hub model repo, with a generated model card.

Examples:
    python scripts/push_to_hub.py outputs/mnist-mlp --repo_id user/mnist-mlp
    python scripts/push_to_hub.py outputs/mnist-mlp --repo_id my-org/mnist-mlp --private

The token needs write access. It comes from --hub_token, else the HF_TOKEN environment variable, else the
store of `hf auth login`. Pushing the same folder again uploads nothing and creates no commit.
"""

import argparse
import sys

from hf_mnist.cli import setup_logging
from hf_mnist.hub import HubAccessError, HubPushError, push_output_dir


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Publish a training run's output folder to a Hub model repo, with a generated model card."
    )
    parser.add_argument("output_dir", help="Output folder of a finished scripts/train.py run.")
    parser.add_argument(
        "--repo_id", required=True, help="Hub model repo to create or update: user/name, or name for your user."
    )
    parser.add_argument(
        "--private",
        action="store_true",
        help="Create the repo as private. An existing repo keeps its visibility. Default: public.",
    )
    parser.add_argument(
        "--commit_message", default=None, help="Summary of the commit. Default: the model name and its accuracy."
    )
    parser.add_argument(
        "--hub_token",
        default=None,
        help="Hub token with write access. Default: HF_TOKEN, then the token stored by `hf auth login`.",
    )
    return parser


def main(argv: list[str] | None = None) -> str:
    args = build_parser().parse_args(argv)
    return push_output_dir(
        args.output_dir,
        args.repo_id,
        token=args.hub_token,
        private=args.private or None,
        commit_message=args.commit_message,
    )


if __name__ == "__main__":
    setup_logging()
    try:
        main(sys.argv[1:])
    except (HubAccessError, HubPushError, ConnectionError, FileNotFoundError, ValueError) as err:
        # These messages name the failure and its fix, so a traceback would only bury them.
        sys.exit(f"error: {err}")

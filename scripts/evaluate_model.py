"""Score a saved hf-mnist model on any supported data source and split.

Examples:
    python scripts/evaluate_model.py --model outputs/mnist-mlp --dataset_name sample --split test
    accelerate launch --num_processes 2 scripts/evaluate_model.py --model user/mnist-mlp \
        --dataset_name ylecun/mnist --split test --output_json results.json

Prints accuracy and macro-F1, and with --output_json writes them with num_samples, per-class accuracy and
the confusion matrix.
"""

import sys

from hf_mnist.cli import parse_arguments, setup_logging
from hf_mnist.evaluation import EvaluationArguments, evaluate_saved_model


def main(argv: list[str] | None = None) -> None:
    (args,) = parse_arguments((EvaluationArguments,), argv)
    setup_logging()
    evaluate_saved_model(args)


if __name__ == "__main__":
    main(sys.argv[1:])

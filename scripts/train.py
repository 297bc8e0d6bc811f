"""Train the hf-mnist digit classifier.

Examples:
    python scripts/train.py                                   # the embedded sample, default settings
    accelerate launch scripts/train.py --dataset_name ylecun/mnist --num_train_epochs 5
    python scripts/train.py configs/train_sample.yaml         # every argument from a YAML or JSON file

Run with --help for every flag; the model, data and TrainingArguments flags can be mixed freely.
"""

import sys

from hf_mnist.cli import parse_arguments, setup_logging
from hf_mnist.train import DataArguments, MnistTrainingArguments, ModelArguments, run_training


def main(argv: list[str] | None = None) -> None:
    model_args, data_args, training_args = parse_arguments(
        (ModelArguments, DataArguments, MnistTrainingArguments), argv
    )
    setup_logging(training_args)
    run_training(model_args, data_args, training_args)


if __name__ == "__main__":
    main(sys.argv[1:])

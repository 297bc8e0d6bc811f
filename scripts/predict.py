"""Predict digits with a saved hf-mnist model and write the predictions as CSV.

Examples:
    python scripts/predict.py --model outputs/mnist-mlp --inputs my_digits/ --output_csv predictions.csv
    python scripts/predict.py --model outputs/mnist-mlp --inputs test.csv --output_csv submission.csv
    python scripts/predict.py --model outputs/mnist-mlp --inputs photos/ --explain_dir seen/

Images give rows of file,label,score, plus digit_found when the model's image processor normalizes digits
the MNIST way (its default). digit_found is False, and label and score are empty, for an image in which no
digit shows against the background. A Kaggle digit-recognizer CSV gives a submission: ImageId,Label with ids
counted from 1.
--explain_dir saves the 28 x 28 image the model saw for each input, and adds its path as a model_input
column for image inputs.
"""

import sys

from hf_mnist.cli import parse_arguments, setup_logging
from hf_mnist.inference import PredictionArguments, run_prediction


def main(argv: list[str] | None = None) -> None:
    (args,) = parse_arguments((PredictionArguments,), argv)
    setup_logging()
    run_prediction(args)


if __name__ == "__main__":
    main(sys.argv[1:])

"""scripts/train.py with injected faults, for the distributed and resume tests.

Environment variables choose the fault:
    FAULT_KILL_AT_STEP=N     SIGKILL this process after a gradient-accumulation substep taken while the
                             optimizer step count is N, that is in the middle of an accumulation cycle.
    FAULT_RAISE_AT_STEP=N    raise RuntimeError at the end of optimizer step N ...
    FAULT_RANK=R             ... on process R only (default 0).
    FAULT_START_METHOD=spawn set the multiprocessing start method before training (for data-loader workers).
"""

import multiprocessing
import os
import signal
import sys

from transformers import TrainerCallback

from hf_mnist.cli import parse_arguments, setup_logging
from hf_mnist.train import DataArguments, MnistTrainingArguments, ModelArguments, run_training


class InjectFault(TrainerCallback):
    def __init__(self):
        self.kill_at_step = int(os.environ.get("FAULT_KILL_AT_STEP", "-1"))
        self.raise_at_step = int(os.environ.get("FAULT_RAISE_AT_STEP", "-1"))
        self.rank = int(os.environ.get("FAULT_RANK", "0"))

    def on_substep_end(self, args, state, control, **kwargs):
        if state.global_step == self.kill_at_step and args.process_index == self.rank:
            os.kill(os.getpid(), signal.SIGKILL)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.raise_at_step and args.process_index == self.rank:
            raise RuntimeError(f"injected failure on rank {self.rank} at step {state.global_step}")


def main() -> None:
    if "FAULT_START_METHOD" in os.environ:
        multiprocessing.set_start_method(os.environ["FAULT_START_METHOD"], force=True)
    model_args, data_args, training_args = parse_arguments(
        (ModelArguments, DataArguments, MnistTrainingArguments), sys.argv[1:]
    )
    setup_logging(training_args)
    run_training(model_args, data_args, training_args, callbacks=[InjectFault()])


if __name__ == "__main__":
    main()

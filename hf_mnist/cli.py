"""Argument parsing and logging set-up shared by the scripts in `scripts/`."""

import logging
import os
import sys
from pathlib import Path

import datasets
import transformers
from transformers import HfArgumentParser, TrainingArguments

CONFIG_SUFFIXES = (".yaml", ".yml", ".json")


def parse_arguments(dataclass_types: tuple, argv: list[str] | None = None) -> tuple:
    """Parse command-line flags, or a single YAML/JSON file holding the same keys, into the dataclasses."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = HfArgumentParser(dataclass_types)
    if len(argv) == 1 and argv[0].endswith(CONFIG_SUFFIXES):
        config_file = Path(argv[0])
        if not config_file.is_file():
            raise FileNotFoundError(f"Config file {config_file} does not exist; pass an existing YAML or JSON file.")
        if config_file.suffix == ".json":
            return parser.parse_json_file(json_file=str(config_file.resolve()))
        return parser.parse_yaml_file(yaml_file=str(config_file.resolve()))
    return parser.parse_args_into_dataclasses(args=argv)


def setup_logging(training_args: TrainingArguments | None = None) -> None:
    """Log at INFO on the main process and at WARNING on the other ranks of a distributed run.

    The rank comes from `training_args`, or without them from the RANK variable that `accelerate launch` and
    torchrun set.
    """
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    # hf_mnist logs at INFO on the main process only. transformers stays at WARNING unless --log_level
    # (or --log_level_replica on the other ranks) requests more.
    if training_args is not None:
        is_main = training_args.should_log
    else:  # a script without TrainingArguments: the RANK that the launcher sets identifies the main process
        is_main = int(os.environ.get("RANK", "0")) == 0
    library_level = logging.INFO if is_main else logging.WARNING
    transformers_level = logging.WARNING
    if training_args is not None:
        chosen = training_args.log_level if is_main else training_args.log_level_replica
        if chosen != "passive":
            transformers_level = training_args.get_process_log_level()
    logging.getLogger("hf_mnist").setLevel(library_level)
    transformers.utils.logging.set_verbosity(transformers_level)
    datasets.utils.logging.set_verbosity(max(transformers_level, logging.WARNING))
    transformers.utils.logging.enable_default_handler()
    transformers.utils.logging.enable_explicit_format()

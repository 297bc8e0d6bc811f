"""Draw the README's before/after picture of MNIST-style normalization on a photo-like digit.

Example:
    python scripts/make_readme_figure.py --output docs/images/real_world_before_after.png

The picture has three panels. The first is a photo-like image made from one digit of the embedded sample's
test split: dark ink on unevenly lit, noisy paper, small and off-centre, saved and read back as a JPEG. The
second is the 28 x 28 image that a model reads without the MNIST-style step (plain resizing), and the third
the one it reads with the step. The same seed draws the same picture.
"""

import io
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from hf_mnist.cli import parse_arguments, setup_logging
from hf_mnist.data import load_digits
from hf_mnist.image_processing_mnist import MnistImageProcessor

# Under "hf_mnist", so that `setup_logging` shows its INFO messages.
logger = logging.getLogger("hf_mnist.make_readme_figure")

PANEL_SIDE = 196  # pixels; 7 screen pixels per pixel of a 28 x 28 image
MARGIN = 12
CAPTION_HEIGHT = 40


@dataclass
class FigureArguments:
    """Output file and source digit of the picture."""

    output: str = field(default="docs/images/real_world_before_after.png", metadata={"help": "PNG file to write."})
    digit_index: int = field(default=0, metadata={"help": "Row of the embedded sample's test split to draw."})
    seed: int = field(default=7, metadata={"help": "Seed of the photo's placement, lighting and noise."})


def make_photo(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """Return the digit as a 160 x 160 photo-like RGB image, decoded from a JPEG of quality 75."""
    side, digit_side = 160, 48
    scaled = Image.fromarray(digit).resize((digit_side, digit_side), Image.Resampling.BICUBIC)
    top, left = int(rng.integers(10, 40)), int(rng.integers(90, 110))
    coverage = np.zeros((side, side), dtype=np.float32)
    coverage[top : top + digit_side, left : left + digit_side] = np.asarray(scaled, dtype=np.float32) / 255

    # The light falls by 45% from the top-left corner to the bottom-right one.
    rows, cols = np.indices((side, side)) / (2 * (side - 1))
    lighting = 1 - 0.45 * (rows + cols)
    grey = (225 * (1 - coverage) + 50 * coverage) * lighting + rng.normal(0, 6, (side, side))
    rgb = np.clip(grey[..., None] * np.array([1.0, 0.97, 0.9]), 0, 255).astype(np.uint8)

    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=75)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def model_view(photo: Image.Image, processor: MnistImageProcessor) -> Image.Image:
    """Return the grey image that `processor` gives a model for `photo`, enlarged to a panel."""
    frame = processor.unnormalize(processor(photo, return_tensors="np")["pixel_values"])[0]
    return Image.fromarray(frame).resize((PANEL_SIDE, PANEL_SIDE), Image.Resampling.NEAREST).convert("RGB")


def draw_figure(panels: list[tuple[Image.Image, str]]) -> Image.Image:
    """Place the panels side by side on white, each with its caption below."""
    width = len(panels) * (PANEL_SIDE + MARGIN) + MARGIN
    figure = Image.new("RGB", (width, PANEL_SIDE + CAPTION_HEIGHT + 2 * MARGIN), "white")
    draw = ImageDraw.Draw(figure)
    font = ImageFont.load_default(size=14)
    for index, (panel, caption) in enumerate(panels):
        left = MARGIN + index * (PANEL_SIDE + MARGIN)
        figure.paste(panel.resize((PANEL_SIDE, PANEL_SIDE), Image.Resampling.BICUBIC), (left, MARGIN))
        draw.multiline_text(
            (left + PANEL_SIDE // 2, MARGIN + PANEL_SIDE + 6),
            caption,
            fill="black",
            font=font,
            anchor="ma",
            align="center",
        )
    return figure


def make_figure(args: FigureArguments) -> Path:
    """Draw the picture for `args` and save it; return its path."""
    digits = load_digits("sample")["test"]
    if not 0 <= args.digit_index < len(digits):
        raise ValueError(f"--digit_index {args.digit_index} is outside the test split; give 0 to {len(digits) - 1}.")
    digit = np.asarray(digits[args.digit_index]["image"])
    photo = make_photo(digit, np.random.default_rng(args.seed))

    panels = [
        (photo, "photo-like input\n(160 x 160 JPEG)"),
        (
            model_view(photo, MnistImageProcessor(do_mnist_normalize=False)),
            "model input, resized only\n(do_mnist_normalize=False)",
        ),
        (model_view(photo, MnistImageProcessor()), "model input, MNIST-style\n(do_mnist_normalize=True)"),
    ]
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    draw_figure(panels).save(output, optimize=True)
    return output


def main(argv: list[str] | None = None) -> None:
    (args,) = parse_arguments((FigureArguments,), argv)
    setup_logging()
    logger.info("Saved %s", make_figure(args))


if __name__ == "__main__":
    main(sys.argv[1:])

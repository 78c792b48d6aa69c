"""The ``mtunet`` command: parses options and calls the ``mtunet`` library.

TensorFlow is imported inside the commands, never at module level, so ``mtunet --help`` and ``--version`` answer
at once. Errors the user can fix (``mtunet.errors.MtunetError``) are printed on one line and exit with status 1.
"""

import functools
import importlib.metadata
import os

import click

# === Shared options: defined once, the same meaning in every command ===
ENCODER = click.option(
    "--encoder", default="mobilenetv2", show_default=True,
    help="Encoder from the registry (see `mtunet encoders`).",
)
IMAGE_SIZE = click.option(
    "--image-size", type=click.IntRange(min=32), default=224, show_default=True,
    help="Square input size in pixels; a multiple of 32.",
)
NUM_CLASSES = click.option(
    "--num-classes", type=click.IntRange(min=2), default=2, show_default=True, help="Number of diagnosis classes.",
)


def _quiet_tensorflow():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def user_errors_as_messages(command):
    """Runs ``command``, turning an ``MtunetError`` into a one-line ``click`` error (exit status 1)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        _quiet_tensorflow()
        from mtunet.errors import MtunetError

        try:
            return command(*args, **kwargs)
        except MtunetError as error:
            raise click.ClickException(str(error)) from None

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(importlib.metadata.version("mtunet"), prog_name="mtunet")
def main():
    """Multi-task U-Nets for medical images: a lesion mask and a diagnosis from one network."""


@main.command()
@click.option("--image-size", type=click.IntRange(min=32), default=224, show_default=True,
              help="Input size the parameters are counted at (they do not depend on it).")
@NUM_CLASSES
@user_errors_as_messages
def encoders(image_size, num_classes):
    """List the encoders: parameters of the multi-task model, ImageNet weights, input scaling."""
    from mtunet.encoders import encoder_table
    from mtunet.model import check_input_shape

    check_input_shape((image_size, image_size, 3))
    rows = encoder_table(num_classes=num_classes, image_size=image_size)
    header = f"{'encoder':<16}{'parameters':>14}  {'imagenet':<10}input scaling"
    click.echo(f"multi-task model at {image_size}x{image_size} with {num_classes} classes")
    click.echo(header)
    click.echo("-" * len(header))
    for row in rows:
        click.echo(f"{row['encoder']:<16}{row['parameters']:>14,}  {'yes' if row['imagenet_weights'] else 'no':<10}"
                   f"{row['input_scaling']}")

"""A partially labelled copy of a folder dataset: the masks of a share of its training images hidden, for measuring
what images without a mask add (``--allow-missing mask``).

    python benchmarks/hide_masks.py ../shared/data/busbra runs/data/busbra-masks25 --keep 0.25

Splits the source as ``mtunet train --dataset folder`` does with split seed ``--split-seed`` (default 0: the split of
a run with the default ``--seed``), then writes a folder dataset whose ``images/`` link to every source image and
whose ``masks/`` link to the masks of all validation and test images but only ``--keep`` of the training images
(chosen at random, stratified by class, seeded by ``--seed``); the other files (``labels.csv``, ``classes.txt``, ...)
are copied. Nothing is copied from images or masks. Beside them it writes two splits files:

- ``splits.json``: the source's split, for any run on the copy;
- ``splits-with-masks.json``: the same, with only the training images that kept their mask: train on the source (or
  the copy) with ``--splits-file`` and the model sees the same images with masks, and no other, and is tested on
  the same test split.
"""

import argparse
import json
import pathlib
import shutil

import numpy as np
from sklearn.model_selection import train_test_split

from mtunet.data import load_dataset

# the split does not depend on the image size: the smallest that decodes fast
SPLIT_IMAGE_SIZE = 16


def write_partial(source: pathlib.Path, target: pathlib.Path, *, keep: float, seed: int, split_seed: int) -> dict:
    """Writes the copy of ``source`` with the masks of ``1 - keep`` of its training images hidden to ``target``;
    returns the counts."""
    data = load_dataset("folder", data_dir=source, image_size=SPLIT_IMAGE_SIZE, seed=split_seed)
    train_ids, train_labels = np.array(data.ids("train")), data.labels("train")
    kept, _ = train_test_split(train_ids, train_size=keep, stratify=train_labels, random_state=seed)
    hidden = set(train_ids.tolist()) - set(kept.tolist())
    (target / "images").mkdir(parents=True)
    (target / "masks").mkdir()
    for path in sorted((source / "images").iterdir()):
        (target / "images" / path.name).symlink_to(path.resolve())
    for path in sorted((source / "masks").iterdir()):
        if path.stem not in hidden:
            (target / "masks" / path.name).symlink_to(path.resolve())
    for path in sorted(source.iterdir()):
        if path.is_file():
            shutil.copyfile(path, target / path.name)
    data.splits.save(target / "splits.json")
    splits = data.splits.to_dict()
    with_masks = [example for example in train_ids.tolist() if example not in hidden]
    splits["splits"] = {**splits["splits"], "train": with_masks}
    (target / "splits-with-masks.json").write_text(json.dumps(splits, indent=1) + "\n")
    return {"images": int(sum(data.info.split_sizes.values())), "train": len(train_ids),
            "train_with_mask": len(train_ids) - len(hidden), "hidden_masks": len(hidden)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=pathlib.Path, help="a folder dataset (images/, masks/, labels.csv)")
    parser.add_argument("target", type=pathlib.Path, help="where to write the copy (must not exist)")
    parser.add_argument("--keep", type=float, default=0.25, help="share of training images that keep their mask")
    parser.add_argument("--seed", type=int, default=0, help="seed of the choice of masks kept")
    parser.add_argument("--split-seed", type=int, default=0, help="split seed of the runs (mtunet train --seed)")
    arguments = parser.parse_args()
    if arguments.target.exists():
        parser.error(f"{arguments.target} exists; expected a new folder")
    if not 0 < arguments.keep < 1:
        parser.error(f"--keep {arguments.keep}: expected a share between 0 and 1")
    counts = write_partial(arguments.source, arguments.target, keep=arguments.keep, seed=arguments.seed,
                           split_seed=arguments.split_seed)
    print(f"{counts['images']} images, {counts['train']} in train: {counts['train_with_mask']} keep their mask, "
          f"{counts['hidden_masks']} hidden: {arguments.target}")


if __name__ == "__main__":
    main()

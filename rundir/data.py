"""The dataset of a run: the `pipelines.DatasetBundle` its config names, or, for a finished run whose
data is gone, the sample its run directory keeps (`rundir.sample`)."""

import dataclasses
import os
import shlex
import sys


def load_data(config):
    """The DatasetBundle a `TrainConfig` asks for (dataset, data dirs, seed)."""
    from pipelines import load_dataset

    return load_dataset(config.dataset, data_dir=config.data_dir, tfds_data_dir=config.tfds_data_dir, seed=config.seed)


def load_run_data(run_dir, config, data_dir=None, warn=None):
    """The data `evaluate` and `export` use for the finished run in `run_dir` (its `config`).

    With `data_dir`: the run's dataset read from there (moved data; the same seed draws the same splits).
    Else the data where config.json says; when it is not there, the run's own sample
    (<run>/sample.npz, as a `pipelines.arrays.ArrayBundle`), with one line through `warn` saying so.

    Raises:
        DataError: (one line) the data is gone and the run keeps no sample, or `data_dir` holds no data.
    """
    from pipelines.errors import DataError

    if data_dir:
        return load_data(dataclasses.replace(config, data_dir=str(data_dir)))
    try:
        return load_data(config)
    except DataError as error:
        from rundir import sample

        arrays = sample.read_sample(run_dir)
        reason = str(error).strip().splitlines()[0].split(": pass")[0].split("; pass")[0]
        if arrays is None:
            raise DataError(
                f"{reason}, and {run_dir} keeps no {sample.SAMPLE_FILE}; pass --data-dir with the run's data at its new place"
            ) from None
        bundle = sample_bundle(run_dir, arrays)
        held = {split: count for split, count in bundle.split_sizes.items() if split in bundle.labelled_splits}
        (warn or _stderr)(
            f"note: {reason}; using the {sum(held.values())} {'+'.join(held)} images kept in "
            f"{shlex.quote(os.path.join(run_dir, sample.SAMPLE_FILE))} (pass --data-dir PATH to use the data at its new place)"
        )
        return bundle


def sample_bundle(run_dir, arrays):
    """An `ArrayBundle` of a run's sample.npz arrays: its verification images by split, its calibration images as "train"."""
    import numpy as np

    from pipelines.arrays import ArrayBundle
    from rundir import sample

    images, labels = {}, {}
    splits = arrays["verification_splits"]
    for split in dict.fromkeys(str(s) for s in splits):
        chosen = splits == split
        images[split] = arrays["verification_images"][chosen]
        labels[split] = arrays["verification_labels"][chosen]
    if len(arrays["calibration_images"]):
        images["train"] = arrays["calibration_images"]
        labels["train"] = np.full(len(images["train"]), -1, np.int64)  # calibration needs no labels
    return ArrayBundle(
        name=f"the sample of {run_dir}",
        class_names=[str(name) for name in arrays["class_names"]],
        image_size=int(arrays["image_size"]),
        images=images,
        labels=labels,
        source=os.path.join(run_dir, sample.SAMPLE_FILE),
    )


def _stderr(line):
    print(line, file=sys.stderr)

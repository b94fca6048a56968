"""The dataset of a run: the `pipelines.DatasetBundle` its config names."""


def load_data(config):
    """The DatasetBundle a `TrainConfig` asks for (dataset, data dirs, seed)."""
    from pipelines import load_dataset

    return load_dataset(config.dataset, data_dir=config.data_dir, tfds_data_dir=config.tfds_data_dir, seed=config.seed)

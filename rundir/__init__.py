"""The run directory, below the verbs: what `app` writes and what `app` and `export` read.

    rundir.layout   the contract: the name of every file a run directory holds, and the readers/writers of JSON in it
    rundir.config   TrainConfig, one validated training configuration (the run's config.json)
    rundir.data     the dataset of a run (`load_data(config)`)
    rundir.run      a finished run directory, read (`open_run`), and its `.keras` files loaded with safe_mode

`app/` (the verbs) and `export/` both import this package; it imports `models` and `pipelines`, never `app` or `export`.
"""

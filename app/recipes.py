"""Training settings a backbone or a strategy needs, applied where the user gave none.

A backbone may declare a recipe (`models.backbones.recipe_of`): for instance the ImageNet
MobileNets fine-tune only with BatchNorm in inference mode, the pretrained layers at lr 0.001 and
the new classifier at ten times that (README, "ImageNet backbones"). A strategy may declare
defaults that depend on the run (`Strategy.config_defaults`: lp_ft's head phase is a share of the
epochs). A value
given on the command line, in --config or in `python -m app.compare --set` always wins; the run's
config.json records the values used, so --resume and export rebuild the same run.
"""

import dataclasses


def apply_recipes(config, explicit):
    """`config` with its backbone's recipe, then its strategy's defaults, for every setting not in `explicit`."""
    return apply_strategy_defaults(apply_backbone_recipe(config, explicit), explicit)


def apply_strategy_defaults(config, explicit):
    """`config` with the strategy's `config_defaults` for every TrainConfig field not in `explicit`."""
    from models.strategies import get_strategy

    defaults = get_strategy(config.strategy).config_defaults(config)
    changes = {key: value for key, value in defaults.items() if key not in explicit}
    return dataclasses.replace(config, **changes) if changes else config


def apply_backbone_recipe(config, explicit):
    """`config` with its backbone's recipe filled in for every setting not in `explicit`.

    Args:
        config: a TrainConfig.
        explicit: names of the settings the user gave (TrainConfig fields or extra keys).

    Returns:
        a new TrainConfig (the recipe applies only with pretrained weights: `--weights none` keeps
        the plain defaults).
    """
    from models.backbones import recipe_of  # late: keeps `--help` free of TensorFlow

    if str(config.weights).lower() == "none":
        return config
    recipe = recipe_of(config.backbone)
    fields = {f.name for f in dataclasses.fields(config)}
    changes, extra = {}, dict(config.extra)
    for key, value in recipe.items():
        if key in explicit:
            continue
        if key in fields:
            changes[key] = value
        else:
            extra.setdefault(key, value)
    return dataclasses.replace(config, **changes, extra=extra)

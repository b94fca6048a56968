"""A holder that keeps Keras objects out of a layer's tracking (and out of its saved weights)."""


class Untracked:
    """Holds `value` so that the layer it is assigned to does not track it.

    A penalty term refers to the network's variables (and may build a view of the network that
    shares its layers) without owning them: if a `TrainingTerm` tracked them, the trainer's resume
    checkpoint would save the network twice and the term would report the network's weights as
    its own. Keras tracks layers, variables, lists and dicts assigned as attributes; it does not
    look inside a plain object.
    """

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value


def variable_paths(variables):
    """The `path` of each variable: how a term's config names the network weights it refers to."""
    return [variable.path for variable in variables]


def is_unbound(variables):
    """True when `variables` are paths from a config (strings), to be resolved by `resolve_variables`."""
    return any(isinstance(variable, str) for variable in variables)


def resolve_variables(network, paths):
    """The variables of `network` with the given paths, in order; ValueError (one line) naming the first missing one."""
    by_path = {variable.path: variable for variable in network.variables}
    missing = [path for path in paths if path not in by_path]
    if missing:
        raise ValueError(f"network {network.name!r} has no variable {missing[0]!r} ({len(missing)} of {len(paths)} missing)")
    return [by_path[path] for path in paths]

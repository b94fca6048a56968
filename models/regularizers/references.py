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

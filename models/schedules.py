"""Learning-rate schedules for parameter groups that start training at different steps.

LP-FT (Kumar et al., "Fine-Tuning can Distort Pretrained Features and Underperform
Out-of-Distribution", ICLR 2022) trains the new classifier alone first and every layer after; here
that is one `fit` whose pretrained group holds a learning rate of 0 for the head phase:

    lr_pretrained(t) = 0                      for t < delay
                     = schedule(t - delay)    for t >= delay

With SGD, a rate of 0 leaves a variable and its momentum slot exactly as they were (m <- mu m - 0 g
stays 0), so the head phase is a linear probe on the pretrained features (BatchNorm in inference
mode under `--bn frozen`), and the fine-tuning phase starts with fresh momentum and its own warm-up.
Because the phases live in the schedule, the resume checkpoint of any epoch, in either phase, holds
everything needed to continue (the optimizer's step counter decides the phase).
"""

import keras

from models.serialization import PACKAGE


@keras.saving.register_keras_serializable(package=PACKAGE)
class DelayedStart(keras.optimizers.schedules.LearningRateSchedule):
    """0 for the first `delay_steps` steps, then `schedule` restarted from its step 0.

    Args:
        schedule: a `LearningRateSchedule` or a float (a constant rate once started).
        delay_steps: steps held at 0.

    Example:
    >>> rate = DelayedStart(keras.optimizers.schedules.CosineDecay(0.001, 100), delay_steps=50)
    >>> float(rate(10)), float(rate(50))
    (0.0, 0.001)
    """

    def __init__(self, schedule, delay_steps):
        self.schedule = schedule
        self.delay_steps = int(delay_steps)

    def __call__(self, step):
        from keras import ops

        step = ops.cast(step, "float32")
        delay = ops.cast(self.delay_steps, "float32")
        shifted = ops.maximum(step - delay, 0.0)
        if isinstance(self.schedule, keras.optimizers.schedules.LearningRateSchedule):
            rate = ops.cast(self.schedule(shifted), "float32")
        else:
            rate = ops.cast(self.schedule, "float32")
        return ops.where(step < delay, ops.zeros_like(rate), rate)

    def get_config(self):
        schedule = self.schedule
        if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
            schedule = keras.optimizers.schedules.serialize(schedule)
        return {"schedule": schedule, "delay_steps": self.delay_steps}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        schedule = config.pop("schedule")
        if isinstance(schedule, dict):
            schedule = keras.optimizers.schedules.deserialize(schedule)
        return cls(schedule, **config)

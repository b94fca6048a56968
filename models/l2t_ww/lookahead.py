"""The look-ahead of L2T-ww's bilevel step, as pure functions of the weights.

After the real step, the authors' `MetaSGD` (alinlab/L2T-ww, `train/meta_optimizers.py`) records
T steps of SGD on the matching loss L_wfm alone and one step on the cross-entropy, all on the same
batch, then back-propagates the cross-entropy at the weights so reached through the recorded steps
(momentum and weight decay included) to the meta-networks, and rolls the network and its optimizer
back to the state after the real step (`rollback=True`). Here the look-ahead never touches the
variables: the weights and the momentum slots are carried as tensors, the network is evaluated at
them inside a `keras.StatelessScope` (which also keeps its BatchNorm statistics and random state
as they are), and nested gradient tapes give the second-order meta-gradient. So "roll back" costs
nothing: the variables and optimizer slots are never anything but the state after the real step.

The SGD step is the one of `keras.optimizers.SGD` (the network's optimizer), written as a function:
decoupled weight decay `theta <- theta (1 - lr wd)`, then `m <- mu m - lr g`, `theta <- theta + m`
(Nesterov: `theta <- theta + mu m - lr g`), and a variable without gradient unchanged, as Keras does.
With a constant learning rate this is PyTorch's SGD of the authors (`buf <- mu buf + g`,
`theta <- theta - lr buf`), the buffer scaled by -lr.

This is the one module of the method that needs the backend's gradient tape (TensorFlow).
"""

import keras
from keras import ops


class SGDSettings:
    """The hyper-parameters of the network's SGD at its current step, and its momentum slots.

    The network's optimizer is one `keras.optimizers.SGD`, or parameter groups of them (a
    `SplitOptimizer`: pretrained layers and new layers at their own rates, `app.trainer`); each
    variable then steps with its own group's learning rate and slots. The groups share momentum,
    Nesterov and weight decay (they are built from one configuration).

    Args:
        optimizer: a built `keras.optimizers.SGD`, or a `SplitOptimizer` whose leaves are.
    """

    def __init__(self, optimizer):
        groups = sgd_groups(optimizer)
        if not all(isinstance(group, keras.optimizers.SGD) for group in groups):
            names = ", ".join(type(group).__name__ for group in groups)
            raise ValueError(f"the L2T-ww look-ahead differentiates through SGD steps; the network's optimizer is {names}")
        first = groups[0]
        if any((g.momentum, g.nesterov, g.weight_decay) != (first.momentum, first.nesterov, first.weight_decay) for g in groups):
            raise ValueError("the L2T-ww look-ahead needs one momentum, Nesterov setting and weight decay for every parameter group")
        self.optimizer = optimizer
        self.momentum = float(first.momentum)
        self.nesterov = bool(first.nesterov)
        self.weight_decay = None if first.weight_decay is None else float(first.weight_decay)

    def group_of(self, variable):
        """The SGD that steps `variable`."""
        optimizer = self.optimizer
        while hasattr(optimizer, "is_secondary"):
            optimizer = optimizer.secondary if optimizer.is_secondary(variable) else optimizer.main
        return optimizer

    def learning_rates(self, variables):
        """The current learning rate of each variable's group, as float32 tensors."""
        rates = {}
        for variable in variables:
            group = self.group_of(variable)
            if id(group) not in rates:
                rates[id(group)] = ops.convert_to_tensor(group._get_current_learning_rate(), "float32")
        return [rates[id(self.group_of(v))] for v in variables]

    def slots(self, variables):
        """The momentum slot value of each variable (zeros without momentum)."""
        if self.momentum == 0:
            return [ops.zeros(v.shape, v.dtype) for v in variables]
        slots = []
        for variable in variables:
            group = self.group_of(variable)
            slots.append(group.momentums[group._get_variable_index(variable)])
        return values_of(slots)


def sgd_groups(optimizer):
    """The leaf optimizers of `optimizer` (itself, or the inner ones of a `SplitOptimizer`)."""
    if hasattr(optimizer, "is_secondary"):
        return sgd_groups(optimizer.main) + sgd_groups(optimizer.secondary)
    return [optimizer]


def values_of(variables):
    """The current value of each variable, as tensors (a snapshot the look-ahead starts from)."""
    import tensorflow as tf

    return [tf.identity(v.value) for v in variables]


def sgd_step(values, slots, grads, learning_rates, settings):
    """One functional step of `keras.optimizers.SGD`, each value at its own learning rate: (new values, new slots)."""
    new_values, new_slots = [], []
    for value, slot, grad, learning_rate in zip(values, slots, grads, learning_rates):
        if grad is None:
            new_values.append(value)
            new_slots.append(slot)
            continue
        lr = ops.cast(learning_rate, value.dtype)
        grad = ops.cast(grad, value.dtype)
        if settings.weight_decay:
            value = value - value * ops.cast(settings.weight_decay, value.dtype) * lr
        if settings.momentum != 0:
            mu = ops.cast(settings.momentum, value.dtype)
            slot = mu * slot - lr * grad
            value = value + (mu * slot - lr * grad if settings.nesterov else slot)
        else:
            value = value - lr * grad
        new_values.append(value)
        new_slots.append(slot)
    return new_values, new_slots


def evaluate_at(function, variables, values):
    """`function()` with each of `variables` reading the matching tensor of `values` (nothing is assigned)."""
    with keras.StatelessScope(state_mapping=list(zip(variables, values))):
        return function()


def gradients(loss_function, values):
    """d loss_function(values) / d values, recorded by any enclosing tape (so it can be differentiated again)."""
    import tensorflow as tf

    with tf.GradientTape() as tape:
        tape.watch(values)
        loss = loss_function(values)
    return tape.gradient(loss, values)


def lookahead_objective(inner_loss, outer_loss, values, slots, learning_rates, settings, steps=2):
    """The meta-objective of L2T-ww: the outer loss after `steps` steps on `inner_loss` and one on `outer_loss`.

    `theta_{t+1} = SGD(theta_t, d inner_loss(theta_t))` for t < T, then
    `theta_{T+1} = SGD(theta_T, d outer_loss(theta_T))`; returns `outer_loss(theta_{T+1})`.
    Differentiated with respect to the meta-parameters that `inner_loss` reads, this is the
    authors' `meta_backward` (the gradient through every recorded step, second order included).

    Args:
        inner_loss: values -> L_wfm at those weights (the meta-parameters enter here).
        outer_loss: values -> the cross-entropy at those weights.
        values: the weights after the real step (tensors).
        slots: their momentum slots after the real step.
        learning_rates: each value's learning rate (its parameter group's, `SGDSettings.learning_rates`).
        settings: the network optimizer's `SGDSettings`.
        steps: T.
    """
    for _ in range(steps):
        values, slots = sgd_step(values, slots, gradients(inner_loss, values), learning_rates, settings)
    values, slots = sgd_step(values, slots, gradients(outer_loss, values), learning_rates, settings)
    return outer_loss(values)

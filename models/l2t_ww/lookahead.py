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
    """The hyper-parameters of a `keras.optimizers.SGD` at its current step, and its momentum slots.

    Args:
        optimizer: a built `keras.optimizers.SGD`.
    """

    def __init__(self, optimizer):
        if not isinstance(optimizer, keras.optimizers.SGD):
            raise ValueError(f"the L2T-ww look-ahead differentiates through SGD steps; the network's optimizer is {type(optimizer).__name__}")
        self.optimizer = optimizer
        self.momentum = float(optimizer.momentum)
        self.nesterov = bool(optimizer.nesterov)
        self.weight_decay = None if optimizer.weight_decay is None else float(optimizer.weight_decay)

    def learning_rate(self):
        return ops.convert_to_tensor(self.optimizer._get_current_learning_rate(), "float32")

    def slots(self, variables):
        """The momentum slot value of each variable (zeros without momentum)."""
        if self.momentum == 0:
            return [ops.zeros(v.shape, v.dtype) for v in variables]
        return values_of([self.optimizer.momentums[self.optimizer._get_variable_index(v)] for v in variables])


def values_of(variables):
    """The current value of each variable, as tensors (a snapshot the look-ahead starts from)."""
    import tensorflow as tf

    return [tf.identity(v.value) for v in variables]


def sgd_step(values, slots, grads, learning_rate, settings):
    """One functional step of `keras.optimizers.SGD`: (new values, new slots)."""
    new_values, new_slots = [], []
    for value, slot, grad in zip(values, slots, grads):
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


def lookahead_objective(inner_loss, outer_loss, values, slots, settings, steps=2):
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
        settings: the network optimizer's `SGDSettings`.
        steps: T.
    """
    learning_rate = settings.learning_rate()
    for _ in range(steps):
        values, slots = sgd_step(values, slots, gradients(inner_loss, values), learning_rate, settings)
    values, slots = sgd_step(values, slots, gradients(outer_loss, values), learning_rate, settings)
    return outer_loss(values)

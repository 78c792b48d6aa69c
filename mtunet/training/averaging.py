"""Weight averaging: an exponential moving average of the weights, validated, checkpointed and kept in their place."""

import keras
from keras import ops

# TensorFlow's ExponentialMovingAverage(num_updates=...) warm-up: step t averages with momentum at most
# (1 + t) / (WARMUP_OFFSET + t), i.e. over roughly the last tenth of the steps so far.
WARMUP_OFFSET = 10.0


def warmed_up_momentum(momentum: float, step):
    """The momentum of step ``step`` (0-based): ``min(momentum, (1 + step) / (10 + step))``; 0 at step 0, where the
    average starts as the weights themselves."""
    step = ops.cast(step, "float32")
    warm = ops.minimum(momentum, (1.0 + step) / (WARMUP_OFFSET + step))
    return ops.where(ops.equal(step, 0.0), 0.0, warm)


@keras.saving.register_keras_serializable(package="mtunet")
class AveragingAdam(keras.optimizers.Adam):
    """Keras's Adam with ``use_ema=True`` whose average warms up as TensorFlow's ExponentialMovingAverage does with
    ``num_updates`` (here ``t`` counts the steps before this one).

    Keras averages with ``ema_momentum`` from the second step on, so for the first few hundred steps its average is
    mostly the random initial weights (0.99 ** 100 = 0.37): a short run, or the first epochs on a small dataset, would
    be validated on weights near the initial ones. Keras has no warm-up option, hence this override of its update.

    Args:
        learning_rate: Adam's learning rate.
        ema_momentum: the momentum of the average once warmed up (step ``t`` uses
            ``min(ema_momentum, (1 + t) / (10 + t))``).
        **kwargs: the other arguments of ``keras.optimizers.Adam`` (``use_ema`` is always True).
    """

    def __init__(self, learning_rate=1e-3, ema_momentum=0.99, **kwargs):
        kwargs["use_ema"] = True
        super().__init__(learning_rate=learning_rate, ema_momentum=ema_momentum, **kwargs)

    def _update_model_variables_moving_average(self, trainable_variables):
        momentum = warmed_up_momentum(self.ema_momentum, self.iterations)
        for variable, average in zip(trainable_variables, self._model_variables_moving_average):
            if average is not None:
                rate = ops.cast(momentum, variable.dtype)
                average.assign(rate * average + (1.0 - rate) * variable)


class SwapInAveragedWeights(keras.callbacks.SwapEMAWeights):
    """Puts the averaged weights in the model for validation and at the end of every epoch, the trained weights back
    when the next epoch begins; place it first among the callbacks.

    So the validation loss, early stopping's best weights, ``best.keras`` and the epoch backup all hold the average,
    and the run ends with it (Keras's ``SwapEMAWeights(swap_on_epoch=True)``). Each backup thus holds the average in
    the model and the trained weights in the optimizer's slots: with ``resumed=True`` (the model was just restored
    from one), the first epoch begins by swapping them back. A phase stopped early ends with the trained weights in
    the model (Keras's ``finalize_variable_values`` copies the slots back), then with early stopping's best weights,
    an average, which ``restore_best_weights`` sets afterwards; mtunet's early stopping always restores them.
    BatchNorm moving statistics are not averaged: the precise-BN estimate before each validation computes them for
    the average.
    """

    def __init__(self, resumed: bool = False):
        super().__init__(swap_on_epoch=True)
        self._ema_weights_in_model = resumed

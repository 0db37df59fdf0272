"""Weight averaging for the recipes (configs/best_ema.yaml): Lightning's EMA callback, with the
test after `fit` evaluating the averaged weights that the checkpoint holds."""

import lightning as L
from lightning.pytorch.callbacks import EMAWeightAveraging
from lightning.pytorch.trainer.states import TrainerFn


class AveragedWeights(EMAWeightAveraging):
    """An exponential moving average of the weights (`decay` per step): validation, best.ckpt
    and the test use the average; training continues from the raw weights.

    Lightning's callback saves the average as a checkpoint's `state_dict` and the raw weights
    beside it. When it is still attached, as in the test that `fit` runs on best.ckpt, Lightning's
    callback loads those raw weights back into the model, so the test would not evaluate the
    weights that validation chose. Here they are restored only to continue fitting (a resume);
    `test`, `validate` and `predict` keep the checkpoint's average, as in runs of their own.
    """

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint):
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_load_checkpoint(trainer, pl_module, checkpoint)

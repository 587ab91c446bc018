"""TiCo (Zhu, Liu & Huang, 2022): encoder + projector, the loss :class:`sslray.losses.tico.TiCoLoss` (formula, source
and defaults there), no other state."""
from sslray.methods.joint import JointEmbedding


class TiCo(JointEmbedding):
    name = loss_name = "tico"

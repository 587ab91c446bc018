"""VICReg with TiCo's covariance term (this project's question): encoder + projector, the loss :class:`sslray.losses.vicreg_tico.VICRegTiCoLoss` (formula, source
and defaults there), no other state."""
from sslray.methods.joint import JointEmbedding


class VICRegTiCo(JointEmbedding):
    name = loss_name = "vicreg_tico"

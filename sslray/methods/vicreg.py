"""VICReg (Bardes, Ponce & LeCun, ICLR 2022): encoder + projector, the loss :class:`sslray.losses.vicreg.VICRegLoss` (formula, source
and defaults there), no other state."""
from sslray.methods.joint import JointEmbedding


class VICReg(JointEmbedding):
    name = loss_name = "vicreg"

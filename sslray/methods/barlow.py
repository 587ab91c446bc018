"""Barlow Twins (Zbontar et al., ICML 2021): encoder + projector, the loss :class:`sslray.losses.barlow.BarlowTwinsLoss` (formula, source
and defaults there), no other state."""
from sslray.methods.joint import JointEmbedding


class BarlowTwins(JointEmbedding):
    name = loss_name = "barlow"

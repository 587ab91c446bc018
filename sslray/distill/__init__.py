"""SimCLRv2's semi-supervised stages after pretraining: fine-tune with few labels, then distil.

Chen, Kornblith, Swersky, Norouzi & Hinton, "Big Self-Supervised Models are Strong
Semi-Supervised Learners", NeurIPS 2020 (https://arxiv.org/abs/2006.10029). After task-agnostic
pretraining with a deeper (3-layer) projection head (recipe ``cifar10_resnet18_simclrv2.yaml``):

1. fine-tune the pretrained network *from the first layer of the projection head* -- encoder,
   that Linear-BN-ReLU block and a new linear classifier -- on the labelled fraction
   (:mod:`sslray.distill.networks`, :func:`sslray.distill.stages.finetune`);
2. use it as a fixed teacher and train a student (same or smaller encoder) on the unlabelled
   images to match the teacher's temperature-scaled softmax (:mod:`sslray.distill.loss`,
   :func:`sslray.distill.stages.distill`).

``python -m sslray.distill TEACHER ...`` runs both and evaluates teacher and student
(:mod:`sslray.distill.__main__`); MLflow layout in :mod:`sslray.distill.tracking`.
"""
from sslray.distill.loss import distillation_loss
from sslray.distill.networks import FineTuned, build_student, first_projector_block

__all__ = ["distillation_loss", "FineTuned", "build_student", "first_projector_block"]

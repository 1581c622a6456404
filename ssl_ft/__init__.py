"""ssl_ft: self-supervised pretraining and depth-wise fine-tuning of medical imaging models.

See ``DESIGN`` in the docs: recipe -> config -> dataset -> backbone + DepthMap -> pretrain /
finetune / ensemble / study.
"""

from ssl_ft.errors import UserError

__version__ = "0.1.0"
__all__ = ["UserError", "__version__"]

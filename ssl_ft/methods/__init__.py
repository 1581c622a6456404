"""Self-supervised methods; each module registers one method under its ``name``.

contrastive: ``simclr`` (Chen et al. 2020), ``moco`` (MoCo v2, Chen et al. 2020)
restorative: ``autoencoder``, ``inpainting`` (context encoder / context restoration),
``genesis`` (Models Genesis, Zhou et al. 2019/2021)
"""

from ssl_ft.methods import autoencoder, genesis, inpainting, moco, simclr  # noqa: F401  (registers)
from ssl_ft.methods.base import METHODS, SSLMethod, get_method, register

__all__ = ["METHODS", "SSLMethod", "get_method", "register"]

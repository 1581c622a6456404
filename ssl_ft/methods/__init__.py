"""Self-supervised methods; each module registers one method under its ``name``.

contrastive (joint-embedding): ``simclr`` (Chen et al. 2020), ``moco`` (MoCo v2, Chen et al.
2020), ``byol`` (Grill et al. 2020), ``vicreg`` (Bardes et al. 2022), ``barlow_twins`` (Zbontar
et al. 2021), ``dino`` (Caron et al. 2021)
restorative: ``autoencoder``, ``inpainting`` (context encoder / context restoration),
``genesis`` (Models Genesis, Zhou et al. 2019/2021)
"""

from ssl_ft.methods import (  # noqa: F401  (registers)
    autoencoder,
    barlow_twins,
    byol,
    dino,
    genesis,
    inpainting,
    moco,
    simclr,
    vicreg,
)
from ssl_ft.methods.base import METHODS, SSLMethod, get_method, register

__all__ = ["METHODS", "SSLMethod", "get_method", "register"]

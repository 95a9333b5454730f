"""Networks that host the mixers, registered in :data:`sandbox.registry.ARCHS`.

- ``restoration.py``: one SwinIR-topology restoration network for every mixer (``swinir``, ``vheatir``, ``ir``).
- ``reference.py``: DnCNN and FFDNet, which load the official weights.
- ``metaformer.py``: one MetaFormer-style 4-stage classification network (vHeat, HpxFormer, ConvFormer, CAFormer,
  FVNet configurations and ``metaformer`` with any mixer).
"""

from . import metaformer, reference, restoration  # noqa: F401  (each import registers its networks)

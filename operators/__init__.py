"""Token mixers, one per file, registered in :data:`sandbox.registry.MIXERS`.

The mixer contract (checked for every registered mixer, plugins included, by ``sandbox.conformance``):

- ``Mixer(dim, **options)`` is an ``nn.Module``; options are explicit keyword arguments (no ``**kwargs``), so a
  misspelled option is an error.
- ``forward(x)`` maps (B, C, H, W) to (B, C, H, W), C = dim, for any H, W >= 1 unless the mixer registers a
  ``size_multiple`` (window attention pads internally, so it accepts any size too).
- Batch items do not interact.
- Under bf16 autocast it runs, with the numerically sensitive parts (DCT, FFT, exp) computed in fp32.
- Tensors derived from the size (DCT bases, decay maps, masks, distance maps) are cached per (H, W, device, dtype)
  in a :class:`operators._common.SizeCache`; the ``state_dict`` holds only learned parameters, so one set of weights
  runs at every size.
"""

from . import (  # noqa: F401  (each import registers its mixers)
    attention_global,
    attention_window,
    conv,
    ftfu,
    gfnet,
    hco,
    hyena,
    hyena_bi,
    hyena_pixel,
    identity,
    mpfb,
    pool,
    sepconv,
)

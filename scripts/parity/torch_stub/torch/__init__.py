"""Minimal stand-in for ``torch`` so that ``auto_adpq`` can be imported.

auto_adpq 0.3.5 does ``import torch`` at module import time and uses
``torch.Tensor`` / ``torch.nn.Module`` only in type annotations and in the
model-level helpers.  The matrix path used by the parity generator
(``Auto_AdpQ.AdpQ_quantize`` / ``reconstruct_weights``) is pure numpy, so
these empty placeholder classes are sufficient.  Nothing here does any math.
"""

from . import nn  # noqa: F401

__version__ = "0.0.0+adpq-parity-stub"


class Tensor:  # placeholder type, never instantiated by the parity path
    pass


class dtype:  # placeholder
    pass


bfloat16 = dtype()
float16 = dtype()
float32 = dtype()

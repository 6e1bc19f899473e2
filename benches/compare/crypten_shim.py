"""Makes ``import crypten`` (0.4.1) work on recent torch; import this before crypten.

CrypTen 0.4.1's ONNX converter does ``from torch.onnx._internal.registration import
registry``; torch moved that module to ``torch.onnx._internal.torchscript_exporter.registration``.
Aliasing it in ``sys.modules`` before the import is all that is needed (issue 7).
"""

from __future__ import annotations

import importlib
import sys

OLD = "torch.onnx._internal.registration"
NEW = "torch.onnx._internal.torchscript_exporter.registration"


def install() -> None:
    if OLD in sys.modules:
        return
    try:
        importlib.import_module(OLD)
        return  # an older torch that still has it
    except ImportError:
        pass
    sys.modules[OLD] = importlib.import_module(NEW)


install()

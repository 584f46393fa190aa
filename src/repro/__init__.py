"""repro: measure what training a computer-vision model costs in energy.

Reproduces and extends del Rey et al., "Do DL models and training environments have an impact on
energy consumption?" (SEAA 2023, doi:10.1109/SEAA60479.2023.00031).
"""

__version__ = "0.1.0"

# Registers the study's models that timm lacks (nasnet_mobile, vgg16_gap) with timm's registry, so
# `timm.create_model("nasnet_mobile")` works once `repro` is imported.
from repro import models as _models  # noqa: E402, F401

"""repro: measure what training a computer-vision model costs in energy.

Reproduces and extends del Rey et al., "Do DL models and training environments have an impact on
energy consumption?" (SEAA 2023, doi:10.1109/SEAA60479.2023.00031).
"""

__version__ = "0.1.0"

# The study's models that timm lacks (nasnet_mobile, vgg16_gap) are registered with timm when
# `repro.models` is imported, which every training entry point does. Importing them here would make
# `import repro` load torch, and the statistics (`python -m repro.paper`) need none of it.

"""`hydra/launcher=slurm`: a sweep's jobs go to SLURM, each with its `gpu=` profile's resources.

Hydra finds this plugin because it lives in the `hydra_plugins` namespace package.
"""

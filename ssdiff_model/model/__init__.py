"""The SSDiff network (the release's layout and the project's first), its diffusion, LoRA, checkpoints and model cards.

Modules: ``network`` (the release's ``SSDiffNet``, ``build_network``), ``network_legacy`` (the project's first layout,
which the shipped checkpoints use), ``fusion`` (APFM, FMIM), ``diffusion`` (``GaussianDiffusion``, its DDIM samplers),
``dihedral`` (the dihedral group, the self-ensemble), ``lora``, ``checkpoint`` (files, shipped names, hashes),
``sampling`` (the sampling settings a run uses and where each comes from),
``release`` (the authors' parameter names and checkpoints).
"""
__all__ = ["checkpoint", "diffusion", "dihedral", "fusion", "lora", "network", "network_legacy", "release", "sampling"]

"""The SSDiff network (the release's layout and the project's first), its diffusion, LoRA, checkpoints and model
cards."""

"""Training SSDiff: the one training configuration, the loop with L-BAF phases, example making and validation."""

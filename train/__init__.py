"""train: data sources, the model zoo (with offline pretrained weights), the training loop, checkpoints."""

"""The reference training loop (`loop`), its set-up (`setup`), data, losses and models."""

"""Fine-tuning, generation and evaluation: the only layer that imports torch."""

"""Training: Petastorm shards -> data-parallel PyTorch (one loop, several launchers)."""

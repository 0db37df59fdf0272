"""The classic MNIST CNN, trained, tracked and used with PyTorch Lightning."""

"""Knowledge distillation: pure loss functions and the pieces that plug a teacher into the training loop."""

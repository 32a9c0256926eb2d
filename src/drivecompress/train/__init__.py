"""The one training loop (train, fine-tune, distill, QAT) and safetensors + JSON checkpoints."""

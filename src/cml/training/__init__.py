"""Training: length-bucketed batches, an Accelerate loop, safetensors checkpoints that resume exactly."""

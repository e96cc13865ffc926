"""Training: distribution strategies, the detection task (model, inputs, losses, train step), the loop."""

"""Weights from the TF1 Object Detection API model zoo: variable names, import into a checkpoint."""

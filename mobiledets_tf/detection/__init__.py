"""SSD detection ops: anchors, box coding, target assignment, losses and postprocessing."""

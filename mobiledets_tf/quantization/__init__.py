"""Quantization-aware training support: QuantizeConfigs of the package's custom layers and QAT wrapping."""

"""Latency benchmark harness: time exported .tflite models on the local CPU, on Android devices over
adb (TFLite's benchmark_model with CPU, NNAPI, GPU, Hexagon or external delegates) and on Edge TPUs,
and write latency tables (Markdown, CSV, JSON) and a latency-vs-AP Pareto plot."""

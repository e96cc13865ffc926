"""Architecture search (TuNAS): search spaces as data (`space`), latency datasets (`latency_data`) and
the linear cost model (`cost_model`), the weight-sharing supernet (`weight_sharing`, `supernet`), the
REINFORCE controller (`controller`) and the search task and loop (`search_task`, `tunas`)."""

"""The linear cost model: fitting, metrics, held-out figures, files, sub-space prediction, the exact
expected latency, and mobiledets-cost-model fit/eval/predict.

Latencies here come from a known linear model over the real search space's features plus noise, so
what the fit should recover is known; measuring real models is covered by test_latency_data.py.
"""
import dataclasses
import json

import numpy as np
import pytest

from conftest import run_binary
from mobiledets_tf.arch import load_arch
from mobiledets_tf.search.cost_model import (CostModel, CostModelError, FitMetrics, evaluate, evaluate_scaled, fit,
                                             measured_with, rescale, split_holdout, with_statistic)
from mobiledets_tf.search.latency_data import CollectionSettings, sample_row
from mobiledets_tf.search.space import load_space

SETTINGS = CollectionSettings(space="ibn_fused_tucker", platform="cpu")


def synthetic_dataset(path, num=300, noise=0.01, seed=0, settings=SETTINGS, scale=1.0):
    """A latency dataset file whose latencies are true_w . f + 12 ms, times (1 + noise * N(0, 1)) and
    `scale` (a faster or slower device); the fastest run of each is 3% under that."""
    space = settings.load_space()
    rng = np.random.default_rng(seed)
    true_weights = rng.uniform(0.0, 4.0, space.cost_features.size)
    with open(path, "w") as f:
        f.write(json.dumps({**settings.header(space), "context": {}}) + "\n")
        for r in range(num):
            indices = sample_row(space, settings.seed, r)
            latency = scale * (true_weights @ space.cost_features.of(indices) + 12.0) * (1 + noise * rng.normal())
            f.write(json.dumps({"row": r, "indices": indices, "device": "test CPU", "latency_ms": latency,
                                "error": None, "stats": {"median_ms": latency, "min_ms": 0.97 * latency}})
                    + "\n")
        f.write(json.dumps({"row": num, "indices": sample_row(space, 0, num), "latency_ms": None,
                            "error": "crashed (signal 11)"}) + "\n")
    return space, true_weights


def read_rows(path):
    from mobiledets_tf.search.latency_data import read_dataset
    return read_dataset(str(path))


def test_metrics_by_hand():
    metrics = FitMetrics.of(predicted=[11.0, 18.0, 33.0, 40.0], measured=[10.0, 20.0, 30.0, 40.0])
    assert metrics.count == 4
    assert metrics.mape == pytest.approx(100 * (0.1 + 0.1 + 0.1 + 0.0) / 4)
    assert metrics.r2 == pytest.approx(1 - (1 + 4 + 9 + 0) / 500)
    assert metrics.kendall_tau == pytest.approx(1.0)
    assert metrics.within_10 == pytest.approx(1.0)
    assert metrics.max_error == pytest.approx(10.0)
    assert FitMetrics.of([10.0, 30.0, 20.0], [10.0, 20.0, 30.0]).within_10 == pytest.approx(1 / 3)


def test_fit_recovers_a_linear_latency_and_reports_held_out_figures(tmp_path):
    space, true_weights = synthetic_dataset(tmp_path / "d.jsonl")
    header, rows = read_rows(tmp_path / "d.jsonl")
    train, held = split_holdout(rows, 50, seed=0)
    assert len(train) == 250 and len(held) == 50          # the row with an error is left out
    model = fit(space, train, measured_with(header, rows))
    assert model.measured_with["device"] == "test CPU" and model.measured_with["space"] == "ibn_fused_tucker"
    metrics = evaluate(model, space, held)
    assert metrics.within_10 >= 0.95 and metrics.mape < 5 and metrics.r2 > 0.8 and metrics.kendall_tau > 0.7
    # Fresh architectures, noise-free truth: the fit is close to the true linear model.
    fresh = [space.sample(np.random.default_rng([9, i])) for i in range(200)]
    truth = np.array([true_weights @ space.cost_features.of(i) + 12.0 for i in fresh])
    assert np.max(np.abs(model.predict_many(space, fresh) - truth) / truth) < 0.08

    # A fit on too little data, or with nothing measured, is refused with the reason.
    with pytest.raises(CostModelError, match="too few"):
        fit(space, train[:5], {})
    with pytest.raises(CostModelError, match="cannot hold out 400 of 300"):
        split_holdout(rows, 400)


def test_a_model_of_another_device_is_judged_up_to_one_scale_factor(tmp_path):
    """The same architectures on a device twice as fast: off by half unscaled, and up to the median
    ratio exactly as good as on its own device's data (the same noise, scaled)."""
    space, _ = synthetic_dataset(tmp_path / "d.jsonl", noise=0.03)
    synthetic_dataset(tmp_path / "fast.jsonl", noise=0.03, scale=0.5)
    header, rows = read_rows(tmp_path / "d.jsonl")
    _, fast_rows = read_rows(tmp_path / "fast.jsonl")
    model = fit(space, rows[:200], measured_with(header, rows))
    own_ratio, own = evaluate_scaled(model, space, rows)
    fast_ratio, fast = evaluate_scaled(model, space, fast_rows)
    assert own_ratio == pytest.approx(1.0, abs=0.02) and fast_ratio == pytest.approx(0.5 * own_ratio)
    assert dataclasses.asdict(fast) == pytest.approx(dataclasses.asdict(own))
    unscaled = evaluate(model, space, fast_rows)
    assert unscaled.mape > 90 and unscaled.within_10 == 0 and unscaled.kendall_tau == pytest.approx(fast.kendall_tau)


def test_a_model_is_rescaled_to_another_device_from_a_few_architectures(tmp_path):
    """`fit --base`: the base model times one factor from 20 architectures of a device twice as fast
    predicts all 300 there as well as the base does its own; data of other models is refused."""
    synthetic_dataset(tmp_path / "d.jsonl")
    synthetic_dataset(tmp_path / "fast.jsonl", scale=0.5)
    synthetic_dataset(tmp_path / "fast20.jsonl", num=20, scale=0.5)
    base_path, rescaled_path = tmp_path / "base.json", tmp_path / "rescaled.json"
    run_binary("cost_model", "fit", f"--data={tmp_path / 'd.jsonl'}", "--holdout=50", "--statistic=min",
               f"--output={base_path}")
    out = run_binary("cost_model", "fit", f"--base={base_path}", f"--data={tmp_path / 'fast20.jsonl'}",
                     "--holdout=5", f"--output={rescaled_path}").stdout
    assert "the median measured/predicted ratio of 15 architectures, 5 held out" in out
    base, rescaled = CostModel.load(str(base_path)), CostModel.load(str(rescaled_path))
    scale = rescaled.rescaled_from["scale"]
    assert scale == pytest.approx(0.5, rel=0.02) and f"times {scale:.4f}" in out
    assert rescaled.statistic == "min" and rescaled.num_train == 15 and rescaled.rescaled_from["num_train"] == 250
    assert rescaled.metrics["holdout"]["count"] == 5 and "rescaled from test CPU" in rescaled.describe()
    space = SETTINGS.load_space()
    _, fast_rows = read_rows(tmp_path / "fast.jsonl")
    fast_rows = with_statistic(fast_rows, "min")
    indices = [r["indices"] for r in fast_rows]
    assert np.allclose(rescaled.predict_many(space, indices), scale * base.predict_many(space, indices))
    on_fast = evaluate(rescaled, space, fast_rows)
    assert on_fast.within_10 >= 0.95 and on_fast.mape < 5 and evaluate(base, space, fast_rows).within_10 == 0

    header, rows = read_rows(tmp_path / "fast20.jsonl")
    with pytest.raises(CostModelError, match="at least 3"):
        rescale(base, space, rows[:2], measured_with(header, rows, "min"))
    with pytest.raises(CostModelError, match="predicts the min latency"):
        rescale(base, space, rows, measured_with(header, rows, "median"))
    synthetic_dataset(tmp_path / "small_input.jsonl", num=20, settings=dataclasses.replace(SETTINGS, input_size=160))
    refused = run_binary("cost_model", "fit", f"--base={base_path}", f"--data={tmp_path / 'small_input.jsonl'}",
                         "--holdout=0", f"--output={tmp_path / 'no.json'}", check=False)
    assert refused.returncode != 0 and "input_size: 160 vs 320" in refused.stderr
    assert not (tmp_path / "no.json").exists()


def test_a_model_predicting_no_positive_latency_is_refused_before_a_search(tmp_path):
    space, _ = synthetic_dataset(tmp_path / "d.jsonl")
    header, rows = read_rows(tmp_path / "d.jsonl")
    model = fit(space, rows, measured_with(header, rows))
    model.check_positive(space)
    broken = dataclasses.replace(model, intercept=model.intercept - 1e5)   # every prediction below 0
    with pytest.raises(CostModelError, match=r"predicts -[0-9.]+ ms for architecture \[.*fit it on more"):
        broken.check_positive(space)


def test_noise_free_data_is_fitted_exactly():
    space = SETTINGS.load_space()
    rng = np.random.default_rng(1)
    weights = rng.uniform(0.5, 3.0, space.cost_features.size)
    rows = []
    for r in range(400):
        indices = space.sample(rng)
        rows.append({"row": r, "indices": indices, "latency_ms": weights @ space.cost_features.of(indices) + 5.0})
    model = fit(space, rows, {}, ridge=1e-10)
    fresh = [space.sample(rng) for _ in range(50)]
    truth = np.array([weights @ space.cost_features.of(i) + 5.0 for i in fresh])
    assert np.allclose(model.predict_many(space, fresh), truth, rtol=1e-4)


def test_pooling_needs_fewer_architectures_and_folds_into_the_one_hot_weights():
    """Latency shaped like a real backbone (an op costs about the same in the layers of a stage, and
    ops differ consistently everywhere): from 100 architectures, the pooled fit generalises much
    better than the plain one-hot ridge, and both are linear in the same one-hot features."""
    space = SETTINGS.load_space()
    membership, pool_names = space.cost_features.pools()
    assert membership.shape == (space.cost_features.size, len(pool_names))
    assert np.all(membership.sum(axis=1) == 2)            # one stage pool and one op pool each
    assert any(n.startswith("any layer op=") for n in pool_names)
    rng = np.random.default_rng(5)
    pool_costs = rng.uniform(0.0, 2.0, len(pool_names))
    true_weights = membership @ pool_costs * rng.uniform(0.9, 1.1, space.cost_features.size)
    rows = []
    for r in range(150):
        indices = space.sample(rng)
        latency = (true_weights @ space.cost_features.of(indices) + 8.0) * (1 + 0.01 * rng.normal())
        rows.append({"row": r, "indices": indices, "latency_ms": latency})
    train, held = rows[:100], rows[100:]
    pooled, plain = fit(space, train, {}), fit(space, train, {}, pooling=False)
    assert pooled.pooling and not plain.pooling
    pooled_metrics, plain_metrics = evaluate(pooled, space, held), evaluate(plain, space, held)
    assert pooled_metrics.within_10 >= 0.95 > plain_metrics.within_10
    assert pooled_metrics.mape < 0.6 * plain_metrics.mape
    # The saved weights are per one-hot feature: prediction = weights . features + intercept.
    indices = held[0]["indices"]
    expected = pooled.weights @ space.cost_features.of(indices) + pooled.intercept
    assert pooled.predict(space, indices) == pytest.approx(expected)


def test_a_chosen_statistic_is_fitted_and_recorded(tmp_path):
    space, _ = synthetic_dataset(tmp_path / "d.jsonl", num=100)
    header, rows = read_rows(tmp_path / "d.jsonl")
    fastest = with_statistic(rows, "min")
    assert len(fastest) == 100 and all(f["latency_ms"] == r["stats"]["min_ms"] for f, r in zip(fastest, rows))
    assert [r["latency_ms"] for r in with_statistic(rows, "typical")] == [r["latency_ms"] for r in rows[:100]]
    model = fit(space, fastest, measured_with(header, rows, "min"))
    assert model.statistic == "min" and model.describe().endswith(", min latency")
    typical = fit(space, rows, measured_with(header, rows))
    assert typical.statistic == "typical"
    indices = rows[0]["indices"]
    assert model.predict(space, indices) == pytest.approx(0.97 * typical.predict(space, indices), rel=1e-3)
    with pytest.raises(CostModelError, match="row 0 has no mean latency"):
        with_statistic(rows, "mean")
    with pytest.raises(CostModelError, match="unknown latency statistic 'p99'"):
        with_statistic(rows, "p99")


def test_file_round_trip_expected_latency_and_sub_spaces(tmp_path):
    space, _ = synthetic_dataset(tmp_path / "d.jsonl")
    header, rows = read_rows(tmp_path / "d.jsonl")
    model = fit(space, rows, measured_with(header, rows))
    model.save(str(tmp_path / "m.json"))
    loaded = CostModel.load(str(tmp_path / "m.json"))
    samples = [space.sample(np.random.default_rng([3, i])) for i in range(20)]
    assert np.allclose(loaded.predict_many(space, samples), model.predict_many(space, samples))
    assert loaded.space().tag == space.tag and loaded.metrics["train"]["count"] == 300

    # Exact expectation under per-decision probabilities = Monte Carlo mean of sampled predictions.
    rng = np.random.default_rng(4)
    probabilities = [rng.dirichlet(np.ones(len(d.choices))) for d in space.decisions]
    draws = [[int(rng.choice(len(p), p=p)) for p in probabilities] for _ in range(20000)]
    monte_carlo = model.predict_many(space, draws).mean()
    assert model.expected(space, probabilities) == pytest.approx(monte_carlo, rel=0.005)
    uniform = [np.full(len(d.choices), 1 / len(d.choices)) for d in space.decisions]
    one_hot = [np.eye(len(d.choices))[i] for d, i in zip(space.decisions, samples[0])]
    assert model.expected(space, one_hot) == pytest.approx(model.predict(space, samples[0]))
    assert model.expected(space, uniform) > 0

    # The same skeleton and platform with fewer op choices: predictions come from the same weights.
    ibn = load_space("ibn", "cpu")
    arch = load_arch("mobiledet_cpu")
    assert model.predict(ibn, ibn.indices_of(arch)) == pytest.approx(model.predict(space, space.indices_of(arch)))
    with pytest.raises(CostModelError, match="does not know .* feature"):
        edgetpu = load_space("ibn_fused_tucker", "edgetpu")
        model.predict(edgetpu, [0] * len(edgetpu.decisions))


@pytest.mark.parametrize("content, message", [
    ("{", "not JSON"),
    ('{"format": "other"}', "not a cost model"),
    ('{"format": "mobiledets-cost-model", "weights": {}}', "malformed cost model"),
])
def test_bad_model_files_are_named(content, message, tmp_path):
    path = tmp_path / "m.json"
    path.write_text(content)
    with pytest.raises(CostModelError, match=message):
        CostModel.load(str(path))
    with pytest.raises(CostModelError, match="no such cost model file"):
        CostModel.load(str(tmp_path / "none.json"))


def test_binary_fit_eval_predict(tmp_path):
    synthetic_dataset(tmp_path / "d.jsonl")
    synthetic_dataset(tmp_path / "other.jsonl", num=60, seed=0)
    model_path = tmp_path / "cost.json"
    fitted = run_binary("cost_model", "fit", f"--data={tmp_path / 'd.jsonl'}", "--holdout=50",
                        f"--output={model_path}")
    assert "fitted on 250 architectures, 50 held out, 1 rows without a latency skipped" in fitted.stdout
    assert "held-out architectures" in fitted.stdout and "within +-10%" in fitted.stdout
    saved = json.loads(model_path.read_text())
    assert saved["metrics"]["holdout"]["count"] == 50 and (tmp_path / "cost.png").stat().st_size > 10000
    share = saved["metrics"]["holdout"]["within_10"]
    assert f"within +-10%         {100 * share:.1f}%" in fitted.stdout

    evaluated = run_binary("cost_model", "eval", f"--model={model_path}", f"--data={tmp_path / 'other.jsonl'}",
                           f"--output={tmp_path / 'plots' / 'other.png'}")
    assert "architectures        60" in evaluated.stdout and (tmp_path / "plots" / "other.png").exists()
    assert not (tmp_path / "other_eval.png").exists()   # nothing written next to the data
    assert "up to one scale factor (predictions times 1.0" in evaluated.stdout

    predicted = run_binary("cost_model", "predict", f"--model={model_path}", "--arch=mobiledet_cpu")
    model, space = CostModel.load(str(model_path)), SETTINGS.load_space()
    expected = model.predict(space, space.indices_of(load_arch("mobiledet_cpu")))
    assert f"mobiledet_cpu: {expected:.2f} ms predicted" in predicted.stdout

    outside = run_binary("cost_model", "predict", f"--model={model_path}", "--arch=mobiledet_edgetpu", check=False)
    assert outside.returncode != 0 and "mobiledets-cost-model predict:" in outside.stderr
    usage = run_binary("cost_model", "train", check=False)
    assert usage.returncode != 0 and "usage: mobiledets-cost-model {fit|eval|predict|measure}" in usage.stderr
    no_output = run_binary("cost_model", "fit", f"--data={tmp_path / 'd.jsonl'}", check=False)
    assert "give --output=FILE.json" in no_output.stderr


def test_binary_measure_times_architectures_as_the_data_was(tmp_path):
    """`measure` exports ArchSpecs with the model's settings (here 96x96, 3 classes), times them with
    the local backend and prints measured vs predicted; a different backend is refused."""
    import dataclasses

    from mobiledets_tf.tflite_runtime import load_interpreter

    settings = dataclasses.replace(SETTINGS, input_size=96, num_classes=3)
    space, _ = synthetic_dataset(tmp_path / "d.jsonl", num=60, settings=settings)
    run_binary("cost_model", "fit", f"--data={tmp_path / 'd.jsonl'}", "--holdout=10",
               f"--output={tmp_path / 'cost.json'}", "--noplot", "--statistic=min")
    sampled = space.to_arch_spec(space.sample(np.random.default_rng(7)), name="sampled")
    sampled.save(str(tmp_path / "sampled.json"))
    measured = run_binary("cost_model", "measure", f"--model={tmp_path / 'cost.json'}",
                          f"--arch=mobiledet_cpu,{tmp_path / 'sampled.json'}", f"--work_dir={tmp_path / 'models'}",
                          "--num_runs=3", "--warmup_runs=1", "--rounds=1",
                          f"--measure_output={tmp_path / 'measured.json'}")
    results = {r["arch"]: r for r in json.loads((tmp_path / "measured.json").read_text())}
    model = CostModel.load(str(tmp_path / "cost.json"))
    for name, arch in (("mobiledet_cpu", load_arch("mobiledet_cpu")), ("sampled", sampled)):
        result = results[name]
        assert result["error"] is None and result["measured_ms"] > 0 and result["statistic"] == "min"
        assert result["stats"]["min_ms"] == result["measured_ms"] <= result["stats"]["median_ms"]
        assert result["stats"]["count"] == 3
        assert result["predicted_ms"] == pytest.approx(model.predict(space, space.indices_of(arch)))
        line = f"{name}: measured {result['measured_ms']:.2f} ms (min), predicted {result['predicted_ms']:.2f} ms"
        assert line in measured.stdout
        interpreter = load_interpreter(str(tmp_path / "models" / f"{name}.tflite"))
        assert list(interpreter.get_input_details()[0]["shape"]) == [1, 96, 96, 3]

    other_backend = run_binary("cost_model", "measure", f"--model={tmp_path / 'cost.json'}", "--arch=mobiledet_cpu",
                               "--backend=adb", check=False)
    assert other_backend.returncode != 0 and "measured with backend local" in other_backend.stderr


SHIPPED_COST_MODELS = ("ibn_fused_tucker_cpu", "ibn_fused_tucker_cpu_epyc_avx_vnni")


@pytest.mark.parametrize("name", SHIPPED_COST_MODELS)
def test_shipped_cost_model_is_the_fit_of_its_shipped_data(name):
    """configs/cost_models/: each model refits exactly from the latency data next to it (500 fitted, 50
    held out, seed 0), its recorded held-out figures are those of that data, and it predicts the
    published MobileDet-CPU inside the measured range."""
    import os

    from conftest import REPO_ROOT
    from mobiledets_tf.search.latency_data import read_dataset

    folder = os.path.join(REPO_ROOT, "configs", "cost_models")
    files = sorted(f for f in os.listdir(folder) if f.endswith(".json"))
    assert files == sorted(f"{n}.json" for n in SHIPPED_COST_MODELS)
    shipped = CostModel.load(os.path.join(folder, f"{name}.json"))
    header, rows = read_dataset(os.path.join(folder, f"{name}.latency.jsonl"))
    space = shipped.space()
    rows = with_statistic(rows, shipped.statistic)
    train, held = split_holdout(rows, 50, seed=0)
    refit = fit(space, train, measured_with(header, rows, shipped.statistic))
    assert refit.ridge == shipped.ridge and refit.pooling and np.allclose(refit.weights, shipped.weights)
    held_out = evaluate(shipped, space, held)
    assert held_out.count == 50 and held_out.mape == pytest.approx(shipped.metrics["holdout"]["mape"])
    assert held_out.within_10 == pytest.approx(shipped.metrics["holdout"]["within_10"])
    measured = [r["latency_ms"] for r in rows]
    predicted = shipped.predict(space, space.indices_of(load_arch("mobiledet_cpu")))
    assert min(measured) < predicted < max(measured)

"""The TuNAS linear latency cost model: fitting, held-out evaluation, saving and prediction.

`T(a) = w . f(a) + b`, with `f` the search space's one-hot features (per layer, the joint choice of
input width, output width and op; `CostFeatures.of`). Fitting is ridge regression that
minimises the squared *relative* error (each row weighted by 1 / latency^2, since the targets are
stated in percent), with the ridge strength chosen by k-fold cross-validation on the training rows.
By default the ridge is pooled: each layer's coefficient is shrunk towards coefficients shared by the
same setting in its stage and by the same op in the whole backbone (`CostFeatures.pools`), and
those are folded back into the per-feature weights.
Because the model is linear, the controller's expected latency is exact: `w . E[f] + b`
(`CostFeatures.expected`).

The latency fitted is a statistic of each architecture's timed runs: by default the dataset's own
figure (the median; the mean over adb), or the minimum, which on a shared machine whose neighbours
slow some runs down is the steadier figure of what the model itself costs.

`rescale` carries a model to another device of the same kind (another x86 CPU) from a few timed
architectures: one factor, the median ratio of measured to predicted latency.

A saved model (JSON) records what it was measured with (space, platform, skeleton, precision, input
size, classes, backend, target, device, statistic) and its weights by feature name, so it also predicts
architectures of a smaller space over the same skeleton and platform (e.g. a model fitted on
ibn_fused_tucker/cpu predicts ibn/cpu architectures): every feature of that space must be known.
"""
import dataclasses
import json
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from scipy import stats as scipy_stats

from mobiledets_tf import fileio
from mobiledets_tf.benchmark.latency import LATENCY_STATISTICS
from mobiledets_tf.search.latency_data import measured_rows
from mobiledets_tf.search.space import SearchSpace, load_space

FORMAT = "mobiledets-cost-model"
RIDGE_GRID = (1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
MODEL_KEYS = ("space", "platform", "skeleton", "space_source", "precision", "input_size", "num_classes",
              "depth_multiplier")     # what was timed; MEASUREMENT_KEYS adds where and how
MEASUREMENT_KEYS = MODEL_KEYS + ("backend", "target", "threads")


class CostModelError(ValueError):
    """A cost model that cannot be fitted, read or applied to a search space."""


@dataclasses.dataclass
class FitMetrics:
    """How well predictions match measurements on a set of architectures."""
    count: int
    mape: float               # mean absolute percentage error, %
    r2: float
    kendall_tau: float
    within_10: float          # share of architectures predicted within +-10%, in [0, 1]
    max_error: float          # largest absolute percentage error, %

    @classmethod
    def of(cls, predicted: Sequence[float], measured: Sequence[float]) -> "FitMetrics":
        predicted, measured = np.asarray(predicted, float), np.asarray(measured, float)
        if len(measured) < 2:
            raise CostModelError("metrics need at least 2 architectures")
        relative = np.abs(predicted - measured) / measured
        residual = np.sum((measured - predicted) ** 2)
        total = np.sum((measured - measured.mean()) ** 2)
        tau = scipy_stats.kendalltau(predicted, measured).statistic
        return cls(count=int(len(measured)), mape=float(100 * relative.mean()),
                   r2=float(1 - residual / total) if total > 0 else float("nan"),
                   kendall_tau=float(tau), within_10=float(np.mean(relative <= 0.10)),
                   max_error=float(100 * relative.max()))

    def lines(self) -> List[str]:
        return [f"architectures        {self.count}",
                f"MAPE                 {self.mape:.2f}%",
                f"R^2                  {self.r2:.4f}",
                f"Kendall tau          {self.kendall_tau:.4f}",
                f"within +-10%         {100 * self.within_10:.1f}%",
                f"largest error        {self.max_error:.1f}%"]


@dataclasses.dataclass
class CostModel:
    measured_with: Dict              # MEASUREMENT_KEYS of the latency dataset (+ device)
    feature_names: List[str]
    weights: np.ndarray
    intercept: float
    ridge: float
    num_train: int
    pooling: bool = False
    metrics: Dict[str, Dict] = dataclasses.field(default_factory=dict)   # e.g. {"holdout": FitMetrics dict}
    rescaled_from: Optional[Dict] = None   # `rescale`: the base model's device and training size, the scale

    # Prediction --------------------------------------------------------------------------------
    def _positions(self, space: SearchSpace) -> np.ndarray:
        """Where each of the space's features sits in this model's weights."""
        where = {name: i for i, name in enumerate(self.feature_names)}
        names = space.cost_features.names()
        missing = [n for n in names if n not in where]
        if missing:
            raise CostModelError(
                f"this cost model ({self.describe()}) does not know {len(missing)} feature(s) of search "
                f"space {space.tag}, e.g. '{missing[0]}'; fit one on latencies measured in that space")
        return np.array([where[n] for n in names], dtype=np.int64)

    def weights_for(self, space: SearchSpace) -> np.ndarray:
        """The weight of each of `space`'s features (in `space.cost_features.of` order)."""
        return self.weights[self._positions(space)]

    def predictor(self, space: SearchSpace) -> Callable[[Sequence[int]], float]:
        """A fast `indices -> predicted ms` for many architectures of `space` (weights looked up once)."""
        weights = self.weights_for(space)
        return lambda indices: float(weights @ space.cost_features.of(indices) + self.intercept)

    def predict(self, space: SearchSpace, indices: Sequence[int]) -> float:
        """Predicted latency (ms) of one architecture of `space`."""
        return self.predictor(space)(indices)

    def predict_many(self, space: SearchSpace, indices_list: Sequence[Sequence[int]]) -> np.ndarray:
        predict = self.predictor(space)
        return np.array([predict(i) for i in indices_list])

    def check_positive(self, space: SearchSpace, draws: int = 1000, seed: int = 0) -> None:
        """Raises when the model predicts a latency <= 0 ms for one of `draws` random architectures of
        `space`: fitted on too few or too noisy latencies, it cannot steer a search."""
        rng = np.random.default_rng(seed)
        architectures = [space.sample(rng) for _ in range(draws)]
        predicted = self.predict_many(space, architectures)
        worst = int(np.argmin(predicted))
        if predicted[worst] <= 0:
            raise CostModelError(
                f"the cost model ({self.describe()}) predicts {predicted[worst]:.3f} ms for architecture "
                f"{architectures[worst]} of {space.tag}: it was fitted on too few or too noisy latencies; fit it "
                "on more architectures, or on their fastest runs (mobiledets-cost-model fit --statistic=min)")

    def expected(self, space: SearchSpace, probabilities: Sequence[Sequence[float]]) -> float:
        """Expected latency (ms) under independent per-decision choice probabilities (exact)."""
        return float(self.weights_for(space) @ space.cost_features.expected(probabilities) + self.intercept)

    def metrics_of(self, name: str) -> FitMetrics:
        return FitMetrics(**self.metrics[name])

    def record_metrics(self, name: str, metrics: FitMetrics) -> None:
        self.metrics[name] = dataclasses.asdict(metrics)

    @property
    def statistic(self) -> str:
        """Which latency statistic of the timed runs the model predicts (LATENCY_STATISTICS)."""
        return self.measured_with.get("statistic", "typical")

    def describe(self) -> str:
        m = self.measured_with
        statistic = "" if self.statistic == "typical" else f", {self.statistic} latency"
        return (f"{m.get('space')}/{m.get('platform')} skeleton {m.get('skeleton')}, {m.get('precision')} "
                f"{m.get('input_size')}x{m.get('input_size')}, {m.get('backend')} {m.get('target')}"
                f"{', ' + m['device'] if m.get('device') else ''}{statistic}"
                f"{'' if not self.rescaled_from else ', rescaled from ' + self.rescaled_from['device']}")

    # Files -------------------------------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, "measured_with": self.measured_with,
                           "intercept": self.intercept, "ridge": self.ridge, "num_train": self.num_train,
                           "pooling": self.pooling, "metrics": self.metrics,
                           **({"rescaled_from": self.rescaled_from} if self.rescaled_from else {}),
                           "weights": {n: float(w) for n, w in zip(self.feature_names, self.weights)}},
                          indent=1)

    def save(self, path: str) -> None:
        fileio.write_text_atomically(path, self.to_json() + "\n")

    @classmethod
    def load(cls, path: str) -> "CostModel":
        try:
            data = json.loads(fileio.read_text(path))
        except FileNotFoundError:
            raise CostModelError(f"{path}: no such cost model file") from None
        except json.JSONDecodeError as e:
            raise CostModelError(f"{path}: not JSON ({e.msg} at line {e.lineno})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise CostModelError(f"{path}: not a cost model (expected \"format\": \"{FORMAT}\")")
        try:
            weights = data["weights"]
            return cls(measured_with=data["measured_with"], feature_names=list(weights),
                       weights=np.array(list(weights.values()), dtype=np.float64),
                       intercept=float(data["intercept"]), ridge=float(data["ridge"]),
                       num_train=int(data["num_train"]), pooling=bool(data.get("pooling", False)),
                       metrics=data.get("metrics", {}), rescaled_from=data.get("rescaled_from"))
        except (KeyError, TypeError, ValueError) as e:
            raise CostModelError(f"{path}: malformed cost model ({type(e).__name__}: {e})") from None

    def space(self) -> SearchSpace:
        """The search space the model was measured in."""
        m = self.measured_with
        return load_space(m["space_source"], m["platform"], skeleton=m["skeleton"], space=m["space"])


# Fitting ---------------------------------------------------------------------------------------------
def design_matrix(space: SearchSpace, rows: Sequence[Dict]) -> Tuple[np.ndarray, np.ndarray]:
    """(features [N, F], measured latencies [N]) of the measured rows."""
    rows = measured_rows(rows)
    if not rows:
        raise CostModelError("no measured architectures (every row has an error)")
    features = np.stack([space.cost_features.of(r["indices"]) for r in rows])
    return features, np.array([r["latency_ms"] for r in rows], dtype=np.float64)


def _solve(features: np.ndarray, latencies: np.ndarray, ridge: float) -> Tuple[np.ndarray, float]:
    """Ridge regression minimising sum(((f.w + b - y) / y)^2) + ridge * N * |w|^2 (b unpenalised)."""
    scale = 1.0 / latencies
    x = np.hstack([features, np.ones((len(features), 1))]) * scale[:, None]
    y = latencies * scale
    penalty = ridge * len(features) * np.eye(x.shape[1])
    penalty[-1, -1] = 0.0
    solution = np.linalg.solve(x.T @ x + penalty, x.T @ y)
    return solution[:-1], float(solution[-1])


def choose_ridge(features: np.ndarray, latencies: np.ndarray, folds: int = 5, seed: int = 0,
                 grid: Sequence[float] = RIDGE_GRID) -> float:
    """The ridge strength of `grid` with the lowest k-fold cross-validated mean relative error."""
    order = np.random.default_rng(seed).permutation(len(latencies))
    parts = np.array_split(order, min(folds, len(latencies)))
    best, best_error = grid[0], np.inf
    for ridge in grid:
        errors = []
        for part in parts:
            train = np.setdiff1d(order, part)
            w, b = _solve(features[train], latencies[train], ridge)
            errors.append(np.abs(features[part] @ w + b - latencies[part]) / latencies[part])
        error = float(np.mean(np.concatenate(errors)))
        if error < best_error:
            best, best_error = ridge, error
    return best


def split_holdout(rows: Sequence[Dict], holdout: int, seed: int = 0) -> Tuple[List[Dict], List[Dict]]:
    """(train rows, held-out rows): `holdout` measured rows picked at random, the rest for fitting."""
    rows = measured_rows(rows)
    if holdout < 0 or holdout >= len(rows):
        raise CostModelError(f"cannot hold out {holdout} of {len(rows)} measured architectures")
    order = np.random.default_rng(seed).permutation(len(rows))
    held = set(order[:holdout].tolist())
    return ([r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held])


def fit(space: SearchSpace, rows: Sequence[Dict], measured_with: Dict, ridge: Optional[float] = None,
        seed: int = 0, pooling: bool = True) -> CostModel:
    """The cost model fitted on `rows` (ridge chosen by cross-validation unless given).

    With `pooling`, the regression also gets one coefficient per pool of `CostFeatures.pools`
    (a setting shared by the layers of a stage, an op shared by all layers); the ridge then shrinks
    each layer's own coefficient towards the pooled ones instead of towards zero, which needs far
    fewer measured architectures. The pooled coefficients are folded back into the per-feature
    weights, so the saved model is the same linear function of the one-hot features.
    """
    features, latencies = design_matrix(space, rows)
    if len(latencies) < 10:
        raise CostModelError(f"{len(latencies)} measured architectures are too few to fit a cost model")
    membership = space.cost_features.pools()[0] if pooling else np.zeros((features.shape[1], 0))
    design = np.hstack([features, features @ membership])
    if ridge is None:
        ridge = choose_ridge(design, latencies, seed=seed)
    coefficients, intercept = _solve(design, latencies, ridge)
    weights = coefficients[:features.shape[1]] + membership @ coefficients[features.shape[1]:]
    model = CostModel(measured_with=dict(measured_with), feature_names=space.cost_features.names(),
                      weights=weights, intercept=intercept, ridge=ridge, num_train=len(latencies),
                      pooling=pooling)
    model.record_metrics("train", FitMetrics.of(features @ weights + intercept, latencies))
    return model


MIN_RESCALE_ARCHITECTURES = 3


def rescale(base: CostModel, space: SearchSpace, rows: Sequence[Dict], measured_with: Dict) -> CostModel:
    """`base` fitted to another device of the same kind by one factor: its weights and intercept times
    the median ratio of `rows`' measured latencies to its predictions. Between the two CPUs of
    configs/cost_models/, 10 timed architectures gave a scale that put 99.6% of 550 within +-10% (README);
    a device whose ops cost other proportions (a phone's CPU, an accelerator) needs a model of its own."""
    different = [k for k in MODEL_KEYS if measured_with.get(k) != base.measured_with.get(k)]
    if different:
        raise CostModelError("the latency data timed other models than the base cost model's (" + ", ".join(
            f"{k}: {measured_with.get(k)!r} vs {base.measured_with.get(k)!r}" for k in different) + ")")
    if measured_with.get("statistic") != base.statistic:
        raise CostModelError(f"the base cost model predicts the {base.statistic} latency: rescale it with the same "
                             f"statistic, not {measured_with.get('statistic')}")
    count = len(measured_rows(rows))
    if count < MIN_RESCALE_ARCHITECTURES:
        raise CostModelError(f"{count} measured architectures are too few to rescale a cost model "
                             f"(at least {MIN_RESCALE_ARCHITECTURES})")
    scale, scaled_fit = evaluate_scaled(base, space, rows)
    model = dataclasses.replace(
        base, measured_with=dict(measured_with), weights=scale * base.weights, intercept=scale * base.intercept,
        num_train=count, metrics={},
        rescaled_from={"device": base.measured_with.get("device", ""), "scale": scale, "num_train": base.num_train})
    model.record_metrics("train", scaled_fit)
    return model


def _predicted_and_measured(model: CostModel, space: SearchSpace,
                            rows: Sequence[Dict]) -> Tuple[np.ndarray, np.ndarray]:
    rows = measured_rows(rows)
    if not rows:
        raise CostModelError("no measured architectures to evaluate on")
    return (model.predict_many(space, [r["indices"] for r in rows]),
            np.asarray([r["latency_ms"] for r in rows], float))


def evaluate(model: CostModel, space: SearchSpace, rows: Sequence[Dict]) -> FitMetrics:
    """Predictions of `model` against the measured latencies of `rows`."""
    return FitMetrics.of(*_predicted_and_measured(model, space, rows))


def evaluate_scaled(model: CostModel, space: SearchSpace, rows: Sequence[Dict]) -> Tuple[float, FitMetrics]:
    """How well `model` predicts `rows` up to one scale factor: the median ratio of measured to
    predicted latency, and the predictions times that ratio against the measurements. On data of
    another device, it tells whether the model still orders and spaces architectures as that device
    does (it then serves a search there with the target scaled by the ratio, or is refitted)."""
    predicted, measured = _predicted_and_measured(model, space, rows)
    ratio = float(np.median(measured / predicted))
    return ratio, FitMetrics.of(ratio * predicted, measured)


def with_statistic(rows: Sequence[Dict], statistic: str) -> List[Dict]:
    """The measured rows with `latency_ms` set to `statistic` of their timed runs ('typical': as recorded)."""
    if statistic not in LATENCY_STATISTICS:
        raise CostModelError(f"unknown latency statistic {statistic!r}; one of {', '.join(LATENCY_STATISTICS)}")
    rows = measured_rows(rows)
    if statistic == "typical":
        return list(rows)
    chosen = []
    for row in rows:
        value = row.get("stats", {}).get(f"{statistic}_ms")
        if value is None:
            raise CostModelError(f"row {row.get('row')} has no {statistic} latency (its statistics: "
                                 f"{', '.join(sorted(row.get('stats', {}))) or 'none'})")
        chosen.append(dict(row, latency_ms=value))
    return chosen


def measured_with(header: Dict, rows: Sequence[Dict], statistic: str = "typical") -> Dict:
    """The measurement settings of a dataset header, with the device of its rows and the statistic fitted."""
    settings = {k: header.get(k) for k in MEASUREMENT_KEYS}
    devices = sorted({r.get("device") for r in measured_rows(rows) if r.get("device")})
    settings["device"] = ", ".join(devices)
    settings["statistic"] = statistic
    return settings


def check_compatible(headers: Sequence[Tuple[str, Dict]]) -> None:
    """Several datasets can be pooled only when they were measured with the same settings."""
    first_path, first = headers[0]
    for path, header in headers[1:]:
        different = [k for k in MEASUREMENT_KEYS if header.get(k) != first.get(k)]
        if different:
            raise CostModelError(f"{path} and {first_path} were measured with different settings "
                                 f"({', '.join(f'{k}: {header.get(k)!r} vs {first.get(k)!r}' for k in different)})")

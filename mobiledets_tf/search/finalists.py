"""The search's last stage: a short standalone training of finalists in place of the one-shot pick.

On small detection data the supernet's one-shot quality orders architectures of one latency only
loosely, while a few hundred standalone steps from scratch order them better
(benchmarks/results/supernet_ranking*_proxy*.md). With `search.finalists` N > 0, `mobiledets-search`
ends with this stage: it draws N distinct architectures from the controller's final distribution
(its most likely one first; with `search.finalist_source=band`, uniformly from the space, and no
supernet is trained) whose predicted latency lies within `search.finalist_band` of the target,
trains each from scratch for `search.finalist_steps` with the search's own training recipe
(warmup a tenth of the steps, a seed of its own; `search.finalist_seeds` trainings under as many
seeds, their scores averaged) and keeps the best by `search.finalist_measure`:
`ap50`, its AP50 on the validation split as `mobiledets-eval` scores it (the highest), or
`training_loss`, its detection loss averaged over every step of that training (the lowest; no
evaluation: training/loss_history.py). The earlier drawn wins a tie. Every finalist trains into its
own folder under `finalists/` and is skipped once scored, so the stage resumes where it stopped.
"""
import dataclasses
import json
import os
from typing import Callable, List, Optional, Tuple

import numpy as np
from absl import logging

from mobiledets_tf import fileio
from mobiledets_tf.config import ExperimentConfig, load_config

FINALISTS_DIR = "finalists"
FINALISTS_JSON = "finalists.json"


@dataclasses.dataclass
class Finalist:
    name: str
    indices: List[int]
    predicted_ms: float
    ap50: Optional[float] = None            # after the short training (measure ap50); None until then
    training_loss: Optional[float] = None   # its mean detection loss (measure training_loss)
    per_seed: Optional[List[float]] = None  # the measure of each training when there are several

    def score(self, measure: str) -> Optional[float]:
        """The finalist's `measure` (FINALIST_MEASURES), higher is better; None until it is scored."""
        value = getattr(self, measure)
        return None if value is None else FINALIST_MEASURES[measure] * value


# Each measure and its sign: AP50 is better higher, the training loss lower; and how output names it.
FINALIST_MEASURES = {"ap50": 1.0, "training_loss": -1.0}
MEASURE_LABELS = {"ap50": "AP50", "training_loss": "mean training loss"}


def draw_finalists(sample: Callable[[np.random.Generator], List[int]], first: List[int],
                   predict: Callable[[List[int]], float], target_ms: float, band: float, num: int, seed: int,
                   max_draws: int = 20000) -> List[Finalist]:
    """Up to `num` distinct architectures within `band` of `target_ms`: `first` (the controller's most
    likely) when it lies there, then draws of `sample`; fewer when `max_draws` draws find no more (a
    controller that has converged on few architectures)."""
    rng = np.random.default_rng(seed)
    found, seen = [], set()

    def consider(indices: List[int]) -> None:
        predicted = predict(indices)
        if tuple(indices) not in seen and abs(predicted / target_ms - 1) <= band:
            seen.add(tuple(indices))
            found.append(Finalist(f"finalist_{len(found):02d}", list(indices), predicted))

    consider(first)
    for _ in range(max_draws):
        if len(found) >= num:
            break
        consider(sample(rng))
    return found[:num]


FINALIST_SEED_OFFSET = 1000


def finalist_config(config_path: str, arch_path: str, steps: int, run: int = 0) -> ExperimentConfig:
    """The search's recipe (its saved config) training `arch_path` from scratch for `steps`, under
    train.seed + FINALIST_SEED_OFFSET + `run` (the finalist's `run`-th training): a later training of
    the chosen architecture under the search's seed starts from other weights and data order than
    its finalist did, so the choice is judged on trainings that did not make it."""
    seed = load_config(config_path).train.seed + FINALIST_SEED_OFFSET + run
    return load_config(config_path, [f"model.arch={arch_path!r}", f"train.steps={steps}",
                                     f"train.warmup_steps={steps // 10}", f"train.checkpoint_every={steps}",
                                     "train.eval_every=0", f"train.seed={seed}"])


def finalist_dir(model_dir: str, name: str, run: int) -> str:
    """Where a finalist's `run`-th training goes: finalists/NAME, then finalists/NAME_runK."""
    return os.path.join(model_dir, FINALISTS_DIR, name if run == 0 else f"{name}_run{run}")


def train_and_score(config: ExperimentConfig, model_dir: str, strategy, measure: str) -> float:
    """Trains `config`'s detector into `model_dir` (resuming) and returns its `measure`: its AP50 on
    the validation split, written to model_dir/eval/metrics.json as `mobiledets-eval` writes it, or
    its detection loss averaged over the training's steps."""
    from mobiledets_tf.config import save_config
    from mobiledets_tf.keras import keras
    from mobiledets_tf.training.loop import TrainingLoop
    from mobiledets_tf.training.loss_history import mean_training_loss
    from mobiledets_tf.training.task import DetectionTask

    keras.backend.clear_session()
    task = DetectionTask(config, strategy)
    fileio.makedirs(model_dir)
    save_config(config, os.path.join(model_dir, "config.yaml"))
    task.detector.arch.save(os.path.join(model_dir, "arch.json"))
    TrainingLoop(task, model_dir).run()
    if measure == "training_loss":
        return mean_training_loss(model_dir)
    return validation_ap50(config, task, model_dir)


def validation_ap50(config: ExperimentConfig, task, model_dir: str) -> float:
    """The AP50 of model_dir's latest checkpoint on the validation split (model_dir/eval/metrics.json)."""
    from mobiledets_tf.evaluation.keras_eval import evaluate_predict_fn, keras_predict_fn, restore_detector
    from mobiledets_tf.models.checkpoints import checkpoint_location

    detector = restore_detector(config, checkpoint_location("", model_dir))
    metrics = evaluate_predict_fn(keras_predict_fn(detector, config.eval), config, task.data,
                                  os.path.join(model_dir, "eval"), progress=False)
    return float(metrics["AP50"])


def controller_finalists(controller, predict: Callable[[List[int]], float], search) -> List[Finalist]:
    """`search.finalists` of the controller's distribution (`draw_finalists`), its most likely first."""
    probabilities = controller.probabilities()
    finalists = draw_finalists(lambda rng: controller.sample(rng, probabilities), controller.argmax(), predict,
                               search.target_ms, search.finalist_band, search.finalists, search.seed)
    if not finalists:
        raise ValueError(f"no architecture of the controller's distribution is predicted within "
                         f"{100 * search.finalist_band:g}% of {search.target_ms:g} ms: widen search.finalist_band")
    if len(finalists) < search.finalists:
        logging.warning("The controller's distribution holds only %d distinct architectures within %g%% of "
                        "the target: %d finalists instead of %d", len(finalists), 100 * search.finalist_band,
                        len(finalists), search.finalists)
    return finalists


BAND_STREAM = 1   # band finalists draw from their own random stream of search.seed


def band_finalists(space, cost_model, search) -> List[Finalist]:
    """`search.finalists` architectures drawn uniformly from the space among those predicted within
    `search.finalist_band` of the target (no supernet, no controller: a random search). Their stream
    differs from that of `mobiledets-search --random_baseline` of the same seed, so a random search
    never starts from the baseline it is compared with."""
    from mobiledets_tf.search.random_search import sample_near_target
    drawn = sample_near_target(space, cost_model, search.target_ms, search.finalists, band=search.finalist_band,
                               seed=[search.seed, BAND_STREAM])
    return [Finalist(f"finalist_{k:02d}", indices, predicted) for k, (indices, predicted) in enumerate(drawn)]


def run_finalists(space, draw: Callable[[], List[Finalist]], model_dir: str, strategy, arch_name: str,
                  cost_model_description: str) -> Tuple[Finalist, List[Finalist]]:
    """The finalist stage in `model_dir` (its config.yaml holds the search's settings): the finalists
    `draw` returns (or those finalists.json recorded), each trained and scored once: (the chosen one,
    all of them), written to finalists.json with their scores."""
    config_path = os.path.join(model_dir, "config.yaml")
    s = load_config(config_path).search
    record_path = os.path.join(model_dir, FINALISTS_JSON)
    if fileio.exists(record_path):
        with fileio.open_file(record_path) as f:
            finalists = [Finalist(**row) for row in json.load(f)["finalists"]]
    else:
        finalists = draw()

    def write(chosen: Optional[Finalist] = None) -> None:
        fileio.write_text_atomically(record_path, json.dumps(
            {"source": s.finalist_source, "measure": s.finalist_measure, "steps": s.finalist_steps,
             "seeds": s.finalist_seeds, "band": s.finalist_band, "target_ms": s.target_ms,
             "chosen": chosen.name if chosen else None,
             "finalists": [dataclasses.asdict(f) for f in finalists]}, indent=2) + "\n")

    write()
    measure = s.finalist_measure
    for k, finalist in enumerate(finalists):
        if finalist.score(measure) is not None:
            continue
        arch_path = os.path.join(model_dir, FINALISTS_DIR, f"{finalist.name}.yaml")
        space.to_arch_spec(finalist.indices, name=f"{arch_name}_{finalist.name}",
                           description=f"finalist {k} of a search over {space.tag}, target {s.target_ms:g} ms, "
                                       f"predicted {finalist.predicted_ms:.2f} ms ({cost_model_description})"
                           ).save(arch_path)
        logging.info("Finalist %d of %d (predicted %.2f ms): %d steps from scratch, %d training(s)", k + 1,
                     len(finalists), finalist.predicted_ms, s.finalist_steps, s.finalist_seeds)
        scores = [train_and_score(finalist_config(config_path, arch_path, s.finalist_steps, run),
                                  finalist_dir(model_dir, finalist.name, run), strategy, measure)
                  for run in range(s.finalist_seeds)]
        setattr(finalist, measure, float(np.mean(scores)))
        finalist.per_seed = scores if len(scores) > 1 else None
        logging.info("Finalist %d of %d: %s %.4f", k + 1, len(finalists), measure, getattr(finalist, measure))
        write()
    chosen = max(finalists, key=lambda f: f.score(measure))   # max keeps the first of equal values
    write(chosen)
    return chosen, finalists

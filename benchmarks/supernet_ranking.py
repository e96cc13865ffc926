"""Benchmark: does the search's one-shot quality rank architectures as standalone training does?

    python benchmarks/supernet_ranking.py --target_ms=25     # about 2 hours on 2 CPUs (AVX-512)
    # another supernet on the same architectures, reusing their standalone trainings:
    python benchmarks/supernet_ranking.py --target_ms=25 --work_dir=runs/ranking_1500 \
        --search_override=train.steps=1500 --standalone_root=runs/supernet_ranking/standalone \
        --name=supernet_ranking_1500
    # another supernet scored against the standalone AP50 a committed report recorded (nothing trained standalone):
    python benchmarks/supernet_ranking.py --target_ms=25 --work_dir=runs/ranking_boost1 \
        --search_override=search.rl_boost=1 --standalone_results=benchmarks/results/supernet_ranking.md \
        --name=supernet_ranking_boost1
    # a standalone recipe judged by how alike its seeds rank the architectures, before any supernet:
    python benchmarks/supernet_ranking.py --target_ms=25 --ground_truth_only --work_dir=runs/recipe_4000 \
        --standalone_override=train.steps=4000,model.match_threshold=0.4,train.warmup_steps=200 \
        --name=standalone_recipe_4000
    # a recorded ground truth and the zero-cost reference alone (nothing trained, no supernet; seconds):
    python benchmarks/supernet_ranking.py --target_ms=25 --ground_truth_only --work_dir=runs/ranking_parameters \
        --standalone_results=benchmarks/results/supernet_ranking.md --name=supernet_ranking_parameters

Stages, each written into --work_dir and skipped when its result exists (an interrupted run resumes):
1. **architectures**: --num_archs distinct random architectures of the space, all predicted within
   +-band of --target_ms by the search's cost model (`random_search.sample_near_target`, so capacity
   alone cannot explain a ranking), written as ArchSpecs (WORK/archs/);
2. **supernet and standalone trainings**, as jobs --jobs at a time, each pinned to one CPU (the
   supernet first; the trainings do not need it; --ground_truth_only: no supernet, nor stage 3):
   - `mobiledets-search --config=...` into WORK/supernet: the search's own schedule (op warmup,
     shared-weight steps on sampled paths, controller updates), with --search_override (a killed
     search resumes from its last checkpoint);
   - each architecture trained from scratch with --config's recipe plus --standalone_override, once
     per --standalone_seeds (train.seed), and evaluated on the validation split (`mobiledets-train`,
     `mobiledets-eval`), in --standalone_root (default WORK/standalone; runs comparing supernets on
     the same architectures and recipe can share one); with --standalone_results none: the AP50
     columns of that earlier report of the same architectures are the ground truth;
   - with --proxy_steps K, each architecture also trained from scratch for K steps with the same recipe
     (warmup K/10, train.seed --proxy_seed, none of the ground truth's), in STANDALONE_ROOT/proxyK:
     a second reference, what a short standalone training ranks without any supernet;
3. **one-shot quality** of each architecture with the supernet's inherited weights, by each measure
   of `MEASURES`, every architecture on the same --quality_batches validation mini-batches (the
   search's size: `search.validation_batch_multiple` x `train.batch_size` images, batch statistics),
   and, for `recalibrated_quality`, as its standalone detector with BatchNorm moving statistics from
   --calibration_images training images, on the whole validation split in inference mode
   (WORK/oneshot.json; a measure it lacks is computed, the recorded ones of the same checkpoint kept);
   with --finetune_steps K, each of those recalibrated detectors is written as a checkpoint
   (WORK/inherited/NAME/) and trained from it for K steps with the standalone recipe (warmup K/10,
   train.seed --proxy_seed) into WORK/finetuneK/: the `finetuned` reference, whether a short training
   from the inherited weights ranks better than one from scratch;
4. **report**: Kendall tau and Spearman rho between each one-shot measure and the mean standalone
   AP50 of the seeds, and likewise for the zero-cost reference every report carries (`parameters`:
   the trainable weights of each architecture's standalone detector, counted without training or
   scoring anything: what a one-shot measure has to beat to show the supernet adds anything; with
   --proxy_steps also the `proxy` reference, AP50 after that short training, and `proxy_loss`, minus
   its detection loss averaged over those steps (the finalist stage's `training_loss` measure), and
   with --finetune_steps the `finetuned` one; with a
   supernet searched with `search.capacity_weight`, also its search measure, Q plus that weight x
   ln(parameters)), the measure's tau against each seed's AP50 alone (averaged over the seeds),
   and the seed-to-seed tau (averaged over the pairs of seeds: the ceiling a one-shot measure can
   reach against one seed); with three seeds or more also each seed's tau against the mean of the
   others (what one more standalone training reaches, scored as the measures are), and what the
   ground truth allows (`seed_statistics.ground_truth_ceiling`: the architectures' spread against one
   training's noise, each seed's offset common to all architectures set apart, and the tau a
   noise-free measure would reach), in benchmarks/results/{--name}.md, which
   ends with the command and `Kendall tau (shipped defaults): X` (with --config or
   --search_override other than the shipped search config's: `Kendall tau (the search measure of
   this supernet): X`).
"""
import itertools
import json
import os
import shutil
import statistics
import sys
import time
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

from absl import app, flags

from mobiledets_tf.search.rewards import capacity_term
from mobiledets_tf.training.loss_history import mean_training_loss
from pinned_jobs import (QUICKSTART_SEARCH, RECIPE, REPO_ROOT, STANDALONE_RECIPE, Job, architectures_near_target,
                         binary, run_pinned, standalone_ap50, standalone_job, write_results)
from ranking_reports import ARCHITECTURE_HEADER, read_ranking_table
from seed_statistics import ground_truth_ceiling

CONFIG = flags.DEFINE_string("config", QUICKSTART_SEARCH,
                             "Search config: the supernet's data and schedule, and the standalone recipe's base.")
WORK_DIR = flags.DEFINE_string("work_dir", "runs/supernet_ranking", "Where the supernet, models and scores go.")
TARGET_MS = flags.DEFINE_float("target_ms", 25.0, "Latency target (cost-model ms) of the search and the architectures.")
BAND = flags.DEFINE_float("band", 0.05, "Relative band around the target the architectures are predicted in.")
NUM_ARCHS = flags.DEFINE_integer("num_archs", 10, "Architectures to rank.")
ARCH_SEED = flags.DEFINE_integer("arch_seed", 0, "Seed of the random architectures (a fresh set: another seed).")
QUALITY_BATCHES = flags.DEFINE_integer("quality_batches", 8, "Validation mini-batches each architecture is scored on.")
CALIBRATION_IMAGES = flags.DEFINE_integer(
    "calibration_images", 256, "Training images whose statistics become each architecture's BatchNorm moving "
    "statistics for the recalibrated measure.")
SEARCH_OVERRIDE = flags.DEFINE_list("search_override", [], "Config overrides of the supernet's search (key=value).")
STANDALONE_OVERRIDE = flags.DEFINE_list("standalone_override", STANDALONE_RECIPE,
                                        "Config overrides of every standalone training (key=value).")
STANDALONE_ROOT = flags.DEFINE_string(
    "standalone_root", "", "Where the standalone trainings go (default WORK/standalone). Runs that compare "
    "supernets on the same architectures and recipe can share one, training each architecture once.")
STANDALONE_SEEDS = flags.DEFINE_list("standalone_seeds", ["0", "1"], "train.seed of each standalone training.")
STANDALONE_RESULTS = flags.DEFINE_string(
    "standalone_results", "", "A results file of this benchmark on the same architectures (--arch_seed, "
    "--target_ms, --band, cost model): its standalone AP50 columns are the ground truth (their seeds, not "
    "--standalone_seeds) and nothing is trained standalone: another supernet scored against a recorded ground truth.")
JOBS = flags.DEFINE_integer("jobs", 2, "Jobs (the supernet's search, standalone trainings) at once, each pinned to one CPU.")
PROXY_STEPS = flags.DEFINE_integer(
    "proxy_steps", 0, "> 0: also train each architecture from scratch for this many steps (the standalone recipe, "
    "warmup a tenth of them, seed --proxy_seed) and rank its AP50 beside the one-shot measures: what a short "
    "standalone training, no supernet, reaches.")
FINETUNE_STEPS = flags.DEFINE_integer(
    "finetune_steps", 0, "> 0: also train each architecture for this many steps starting from the supernet's weights "
    "(its standalone detector as `recalibrated_quality` scores it; the standalone recipe, warmup a tenth of them, seed "
    "--proxy_seed) and rank its AP50 beside the one-shot measures: the inherited weights briefly fine-tuned.")
PROXY_SEED = flags.DEFINE_integer("proxy_seed", 3, "train.seed of the --proxy_steps and --finetune_steps trainings: "
                                  "none of the ground truth's seeds, so that they share no initial weights or data "
                                  "order with it.")
GROUND_TRUTH_ONLY = flags.DEFINE_bool(
    "ground_truth_only", False, "Only the standalone trainings and how alike their seeds rank the architectures, "
    "with the ceiling that allows: a standalone recipe judged before a supernet is trained against it.")
NAME = flags.DEFINE_string("name", "supernet_ranking", "Result file stem under benchmarks/results/.")

SHIPPED_MEASURE = "minibatch_quality"


def supernet_dir(work_dir: str) -> str:
    return os.path.join(work_dir, "supernet")


def supernet_job(work_dir: str) -> Optional[Job]:
    """The search that trains the supernet, as a job; None when it has finished."""
    model_dir = supernet_dir(work_dir)
    if os.path.exists(os.path.join(model_dir, "searched_arch.yaml")):
        return None
    os.makedirs(model_dir, exist_ok=True)
    command = [binary("mobiledets-search"), f"--config={CONFIG.value}", f"--model_dir={model_dir}",
               f"--target_ms={TARGET_MS.value}"]
    if SEARCH_OVERRIDE.value:
        command.append(f"--override={','.join(SEARCH_OVERRIDE.value)}")
    return os.path.join(work_dir, "supernet.log"), command


def search_config():
    """The search's config: --config with --search_override."""
    from mobiledets_tf.config import load_config
    return load_config(CONFIG.value, SEARCH_OVERRIDE.value)


def standalone_config():
    """The config of every standalone training: --config with --standalone_override."""
    from mobiledets_tf.config import load_config
    return load_config(CONFIG.value, STANDALONE_OVERRIDE.value)


def supernet_config():
    """The config the supernet was trained with (its model directory's config.yaml)."""
    from mobiledets_tf.config import load_config
    return load_config(os.path.join(supernet_dir(WORK_DIR.value), "config.yaml"), [])


def architectures(work_dir: str, config) -> List[Dict]:
    """[{name, indices, predicted_ms, arch}] of the random architectures near the target (stage 1)."""
    return architectures_near_target(os.path.join(work_dir, "archs.json"), config, TARGET_MS.value, NUM_ARCHS.value,
                                     BAND.value, ARCH_SEED.value, prefix=f"arch{ARCH_SEED.value}_")


class Scored(NamedTuple):
    """What one architecture produced with the supernet's weights, the input of every measure."""
    detections: List      # (groundtruth, detections) of each quality mini-batch
    losses: List[float]   # classification + localisation loss of each loss mini-batch
    label_map: List[Dict]
    metric: str           # the search's `search.quality_metric`
    calibrated: Dict[str, float]   # COCO metrics on the validation split, BatchNorm recalibrated


# One-shot measures: Scored -> a score, higher is better. The shipped one is the search's own Q
# averaged over the mini-batches.
def minibatch_quality(scored: Scored) -> float:
    from mobiledets_tf.search import tunas
    return statistics.mean(tunas.minibatch_quality(gt, det, scored.label_map, scored.metric)
                           for gt, det in scored.detections)


def pooled_quality(scored: Scored) -> float:
    """The metric of all the mini-batches' detections scored together: one fixed image set (an image
    in two mini-batches counts twice, under ids of its own)."""
    import numpy as np
    from mobiledets_tf.evaluation.coco_metrics import DetectionEvaluator
    from mobiledets_tf.search.tunas import QUALITY_IOU_THRESHOLDS
    evaluator = DetectionEvaluator(scored.label_map)
    for number, (gt, det) in enumerate(scored.detections):
        gt = {k: np.asarray(v) for k, v in gt.items()}
        gt["source_id"] = np.array([int(i) for i in gt["source_id"]], np.int64) + number * 10 ** 9
        evaluator.add(gt, {k: np.asarray(v) for k, v in det.items()})
    return max(evaluator.average_precision(QUALITY_IOU_THRESHOLDS[scored.metric]), 0.0)


def validation_loss(scored: Scored) -> float:
    """Minus the mean detection loss (classification + localisation, as in training) on the loss
    mini-batches: smooth where AP50 of a barely trained supernet is near 0."""
    return -statistics.mean(scored.losses)


def recalibrated_quality(scored: Scored) -> float:
    """The metric of the architecture's standalone detector holding the supernet's weights, its BatchNorm
    moving statistics set from --calibration_images training images, in inference mode on the whole
    validation split (as `mobiledets-eval` scores a trained model)."""
    return scored.calibrated[scored.metric]


MEASURES: Dict[str, Callable[[Scored], float]] = {
    SHIPPED_MEASURE: minibatch_quality, "pooled_quality": pooled_quality, "validation_loss": validation_loss,
    "recalibrated_quality": recalibrated_quality}

# The zero-cost reference every report ranks beside the one-shot measures: what a measure must beat to
# show that the supernet adds anything to counting weights.
PARAMETERS = "parameters"
# The second reference, with --proxy_steps: AP50 after a short standalone training from scratch.
PROXY = "proxy"
# With it, minus the detection loss averaged over the steps of that training (`mean_training_loss`).
PROXY_LOSS = "proxy_loss"
# The third, with --finetune_steps: AP50 after a short training from the supernet's weights.
FINETUNED = "finetuned"
# The search's Q with `search.capacity_weight` w: the shipped measure + w ln(parameters in millions).
CAPACITY_MEASURE = f"{SHIPPED_MEASURE} + capacity"


def parameter_counts(config, archs: List[Dict]) -> Dict[str, float]:
    """{arch name: trainable parameters of its standalone detector, in millions} at `config`'s model
    settings: what standalone training trains, counted as the search's capacity term counts it
    (`Supernet.parameter_count`, from weight shapes; no supernet weights are read)."""
    from mobiledets_tf.search.search_task import search_space_of
    from mobiledets_tf.search.supernet import Supernet
    m = config.model
    supernet = Supernet(search_space_of(config), m.num_classes, m.input_size, m.depth_multiplier, m.min_depth)
    return {arch["name"]: supernet.parameter_count(arch["indices"]) / 1e6 for arch in archs}


def loss_batches(task, count: int) -> List:
    """`count` fixed validation mini-batches of the search's size with training targets (no
    augmentation), the same for every architecture."""
    from mobiledets_tf.data import pipeline
    c = task.config
    dataset = pipeline.train_dataset(
        task.data.val_pattern, task.detector.anchors, c.model.num_classes, c.model.input_size,
        task.validation_batch_size, seed=c.search.seed, max_boxes=c.data.max_boxes, ssd_crop=False,
        flip=False, shuffle_buffer=512, match_threshold=task.detector.match_threshold)
    return list(dataset.take(count))


def calibration_images(task, count: int):
    """The first `count` training images in file order, preprocessed (no augmentation)."""
    from mobiledets_tf.data import pipeline
    c = task.config
    images, _ = next(iter(pipeline.eval_dataset(task.data.train_pattern, c.model.input_size, count, c.data.max_boxes)))
    return task.detector.preprocess(images)


def restored_search_task(work_dir: str, config, indices: Sequence[int]):
    """(the search's task holding the supernet's last checkpoint, that checkpoint's path); `indices`:
    any architecture of the space, run once to build the variables."""
    import tensorflow as tf
    from mobiledets_tf.search.search_task import SearchTask
    task = SearchTask(config, tf.distribute.get_strategy())
    size = config.model.input_size
    task.detector(tf.zeros((1, size, size, 3)), indices)
    latest = tf.train.latest_checkpoint(supernet_dir(work_dir))
    tf.train.Checkpoint(model=task.model).restore(latest).expect_partial().assert_existing_objects_matched()
    return task, latest


def one_shot_scores(work_dir: str, config, archs: List[Dict]) -> Dict[str, Dict[str, float]]:
    """{arch name: {measure: score}} with the supernet's weights (stage 3); when WORK/oneshot.json lacks
    a measure of `MEASURES`, every measure is computed again and the recorded scores are kept."""
    path = os.path.join(work_dir, "oneshot.json")
    recorded = {}
    if os.path.exists(path):
        with open(path) as f:
            recorded = json.load(f)
        if all(set(MEASURES) <= set(recorded.get(a["name"], {})) for a in archs):
            return recorded
    import tensorflow as tf
    from mobiledets_tf.evaluation.keras_eval import evaluate_predict_fn, keras_predict_fn
    from mobiledets_tf.search.supernet import standalone_from_supernet
    task, latest = restored_search_task(work_dir, config, archs[0]["indices"])
    validation = iter(task.distributed_validation_dataset())
    batches = [next(validation) for _ in range(QUALITY_BATCHES.value)]
    targets = loss_batches(task, QUALITY_BATCHES.value)
    detect = task.detect_fn()

    @tf.function
    def loss(images, batch_targets, choices):
        losses = task.replica_losses(images, batch_targets, choices=choices)
        return losses["classification_loss"] + losses["localization_loss"]

    label_map = [{"id": c.id, "name": c.name} for c in task.data.label_map]
    calibration = calibration_images(task, CALIBRATION_IMAGES.value)
    scores = {}
    for arch in archs:
        choices = tf.constant(arch["indices"], tf.int32)
        detector = standalone_from_supernet(task.detector, arch["indices"], calibration_images=calibration)
        scored = Scored(detections=[(groundtruth, detect(images, choices)) for images, groundtruth in batches],
                        losses=[float(loss(images, t, choices)) for images, t in targets],
                        label_map=label_map, metric=config.search.quality_metric,
                        calibrated=evaluate_predict_fn(keras_predict_fn(detector, config.eval), config, task.data,
                                                       progress=False))
        scores[arch["name"]] = {name: float(measure(scored)) for name, measure in MEASURES.items()}
        if recorded.get("checkpoint") == latest:
            scores[arch["name"]].update(recorded.get(arch["name"], {}))
        print(f"{arch['name']}: " + ", ".join(f"{k} {v:.4f}" for k, v in scores[arch["name"]].items()), flush=True)
    with open(path, "w") as f:
        json.dump({"checkpoint": latest, **scores}, f, indent=1)
    return {"checkpoint": latest, **scores}


def standalone_root(work_dir: str) -> str:
    return STANDALONE_ROOT.value or os.path.join(work_dir, "standalone")


def standalone_dir(work_dir: str, name: str, seed: str) -> str:
    return os.path.join(standalone_root(work_dir), f"{name}_seed{seed}")


def claim_standalone_root(work_dir: str, archs: List[Dict]) -> None:
    """Records the recipe and the architectures in the standalone folder (its archs.json); exits when
    that folder already holds another recipe or other architectures under the same names."""
    path = os.path.join(standalone_root(work_dir), "archs.json")
    recipe = {"config": os.path.abspath(CONFIG.value), "overrides": STANDALONE_OVERRIDE.value}
    record = {"recipe": recipe, "archs": {}}
    if os.path.exists(path):
        with open(path) as f:
            record = json.load(f)
        if record["recipe"] != recipe:
            sys.exit(f"{path}: the standalone trainings there used {record['recipe']}, not {recipe}")
    clashes = [a["name"] for a in archs if record["archs"].get(a["name"], a["indices"]) != a["indices"]]
    if clashes:
        sys.exit(f"{path}: {', '.join(clashes)} name other architectures there (another --target_ms, "
                 "--band or cost model): use another --standalone_root or --arch_seed")
    record["archs"].update({a["name"]: a["indices"] for a in archs})
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(record, f, indent=1)


class GroundTruth(NamedTuple):
    """The standalone AP50 of each architecture under each seed, and how they were trained."""
    seeds: List[str]
    ap50: Dict[str, List[float]]   # architecture name -> AP50 of each seed
    recipe: str                    # the report's words for the recipe


def trained_ground_truth(work_dir: str, archs: List[Dict]) -> GroundTruth:
    """The ground truth of this run's standalone trainings (stage 2)."""
    seeds = STANDALONE_SEEDS.value
    return GroundTruth(seeds, {a["name"]: [standalone_ap50(standalone_dir(work_dir, a["name"], s)) for s in seeds]
                               for a in archs}, f"standalone overrides `{','.join(STANDALONE_OVERRIDE.value)}`")


def recorded_ground_truth(path: str, archs: List[Dict]) -> GroundTruth:
    """The standalone AP50 columns of an earlier report of this benchmark (`report`'s architecture
    table); exits when the report lacks one of `archs` or predicts its latency otherwise (then its
    architectures were drawn with another --arch_seed, --target_ms, --band or cost model)."""
    table = read_ranking_table(path)
    rows = table.rows
    for arch in archs:
        if arch["name"] not in rows or abs(rows[arch["name"]].predicted_ms - arch["predicted_ms"]) > 0.006:
            found = f"predicted at {rows[arch['name']].predicted_ms:.2f} ms" if arch["name"] in rows else "missing"
            sys.exit(f"{path}: {arch['name']} (predicted at {arch['predicted_ms']:.2f} ms here) is {found} there: "
                     "it holds other architectures (another --arch_seed, --target_ms, --band or cost model)")
    recipe = RECIPE.search(table.preamble)
    return GroundTruth(table.seeds, {a["name"]: rows[a["name"]].ap50 for a in archs},
                       f"standalone overrides `{recipe.group(1) if recipe else '?'}` (the AP50 columns of "
                       f"`{path}`)")


def proxy_dir(work_dir: str, name: str) -> str:
    return os.path.join(standalone_root(work_dir), f"proxy{PROXY_STEPS.value}", f"{name}_seed{PROXY_SEED.value}")


def finetune_dir(work_dir: str, name: str) -> str:
    return os.path.join(work_dir, f"finetune{FINETUNE_STEPS.value}", f"{name}_seed{PROXY_SEED.value}")


def inherited_prefix(work_dir: str, name: str) -> str:
    """Where `write_inherited_weights` puts an architecture's standalone weights from the supernet."""
    return os.path.join(work_dir, "inherited", name, "weights")


def short_training_jobs(archs: List[Dict], steps: int, model_dir: Callable[[str], str], truth_seeds: Sequence[str],
                        init: Optional[Callable[[str], str]] = None) -> List[Optional[Job]]:
    """Each architecture trained for `steps` with the standalone recipe (warmup a tenth of them, seed
    --proxy_seed) into model_dir(name): from scratch, or from the checkpoint init(name); exits when
    --proxy_seed is one of the ground truth's `truth_seeds`."""
    if str(PROXY_SEED.value) in truth_seeds:
        sys.exit(f"--proxy_seed={PROXY_SEED.value} is a seed of the ground truth: take another")
    overrides = [*STANDALONE_OVERRIDE.value, f"train.steps={steps}", f"train.warmup_steps={steps // 10}",
                 f"train.checkpoint_every={steps}", f"train.seed={PROXY_SEED.value}"]
    return [standalone_job(CONFIG.value, arch["arch"], model_dir(arch["name"]),
                           overrides + ([f"train.init_checkpoint={init(arch['name'])}"] if init else []))
            for arch in archs]


def proxy_jobs(work_dir: str, archs: List[Dict], truth_seeds: Sequence[str]) -> List[Optional[Job]]:
    """Each architecture trained from scratch for --proxy_steps (none without)."""
    if not PROXY_STEPS.value:
        return []
    return short_training_jobs(archs, PROXY_STEPS.value, lambda name: proxy_dir(work_dir, name), truth_seeds)


def proxy_label() -> str:
    return (f"{PROXY} (reference: AP50 after {PROXY_STEPS.value} standalone steps from scratch, seed "
            f"{PROXY_SEED.value}, no supernet)")


def proxy_loss_label() -> str:
    return (f"{PROXY_LOSS} (reference: minus the detection loss averaged over the {PROXY_STEPS.value} steps of "
            f"{PROXY}'s training)")


def write_inherited_weights(work_dir: str, config, archs: List[Dict]) -> None:
    """Each architecture's standalone detector holding the supernet's last weights, its BatchNorm moving
    statistics from --calibration_images training images (the detector `recalibrated_quality` scores),
    as a checkpoint `train.init_checkpoint` restores (`inherited_prefix`); nothing is written again when
    every architecture has one from the same supernet checkpoint."""
    import tensorflow as tf
    from mobiledets_tf.search.supernet import standalone_from_supernet
    record_path = os.path.join(work_dir, "inherited", "source.json")
    latest = tf.train.latest_checkpoint(supernet_dir(work_dir))
    if os.path.exists(record_path):
        with open(record_path) as f:
            if json.load(f)["checkpoint"] == latest and all(
                    os.path.exists(inherited_prefix(work_dir, a["name"]) + ".index") for a in archs):
                return
    task, latest = restored_search_task(work_dir, config, archs[0]["indices"])
    calibration = calibration_images(task, CALIBRATION_IMAGES.value)
    for arch in archs:
        detector = standalone_from_supernet(task.detector, arch["indices"], calibration_images=calibration)
        tf.train.Checkpoint(model=detector.float_model).write(inherited_prefix(work_dir, arch["name"]))
    with open(record_path, "w") as f:
        json.dump({"checkpoint": latest}, f)


def finetune_jobs(work_dir: str, archs: List[Dict], truth_seeds: Sequence[str]) -> List[Optional[Job]]:
    """Each architecture trained for --finetune_steps from its weights in the supernet (none without)."""
    if not FINETUNE_STEPS.value:
        return []
    jobs = short_training_jobs(archs, FINETUNE_STEPS.value, lambda name: finetune_dir(work_dir, name), truth_seeds,
                               init=lambda name: inherited_prefix(work_dir, name))
    if any(jobs):   # the supernet is restored only when a training still has to start from it
        write_inherited_weights(work_dir, supernet_config(), archs)
    return jobs


def finetuned_label() -> str:
    return (f"{FINETUNED} (AP50 after {FINETUNE_STEPS.value} standalone steps from the supernet's weights, "
            f"BatchNorm recalibrated, seed {PROXY_SEED.value})")


def standalone_jobs(work_dir: str, archs: List[Dict]) -> List[Optional[Job]]:
    return [standalone_job(CONFIG.value, arch["arch"], standalone_dir(work_dir, arch["name"], seed),
                           [*STANDALONE_OVERRIDE.value, f"train.seed={seed}"])
            for seed in STANDALONE_SEEDS.value for arch in archs]


def rank_correlations(x: Sequence[float], y: Sequence[float]):
    """(Kendall tau, Spearman rho) of two score lists."""
    from scipy import stats
    return float(stats.kendalltau(x, y).statistic), float(stats.spearmanr(x, y).statistic)


def report(truth: GroundTruth, archs: List[Dict], scores: Optional[Dict], parameters: Dict[str, float],
           elapsed_min: float, capacity_weight: float = 0.0,
           references: Optional[Dict[str, Tuple[str, Dict[str, float]]]] = None) -> str:
    """The results file; `scores` None: the standalone ground truth alone (--ground_truth_only);
    `parameters` (`parameter_counts`): the zero-cost reference, ranked in either case; `capacity_weight`:
    the supernet's `search.capacity_weight`, whose search measure is then the shipped one plus that
    weight x ln(parameters); `references`: {column: (row label, {arch name: AP50})} of the short
    trainings (--proxy_steps, --finetune_steps), each a column and a ranking row."""
    references = references or {}
    from mobiledets_tf.benchmark.local import cpu_name, vector_extensions
    seeds, standalone = truth.seeds, truth.ap50
    measures = list(MEASURES) if scores else []
    search_measure = SHIPPED_MEASURE
    if scores and capacity_weight:
        search_measure = CAPACITY_MEASURE
        measures.append(search_measure)
        scores = {name: value if name == "checkpoint" else
                  {**value, search_measure: value[SHIPPED_MEASURE] + capacity_term(capacity_weight, parameters[name])}
                  for name, value in scores.items()}
    mean_ap50 = [statistics.mean(standalone[a["name"]]) for a in archs]
    supernet = (f"supernet: search overrides `{','.join(SEARCH_OVERRIDE.value) or '-'}`, checkpoint "
                f"`{scores['checkpoint']}`; " if scores else "")
    title = (f"One-shot quality vs standalone AP50 at a {TARGET_MS.value:g} ms target" if scores else
             f"Standalone AP50 of architectures at a {TARGET_MS.value:g} ms target: how alike the seeds rank them")
    lines = [f"# {title} (measured)", "",
             f"config: `{os.path.relpath(CONFIG.value, REPO_ROOT)}`; {supernet}{len(archs)} random architectures "
             f"predicted within +-{100 * BAND.value:g}% of the target (seed {ARCH_SEED.value}); "
             + (f"one-shot scores on {QUALITY_BATCHES.value} validation mini-batches; " if scores else "")
             + f"{truth.recipe}, seeds {', '.join(seeds)}  ",
             f"CPU: {cpu_name()} ({os.cpu_count()} CPUs), vector extensions: {vector_extensions()}  ",
             f"wall time of this invocation: {elapsed_min:.0f} min", "",
             f"{ARCHITECTURE_HEADER} {PARAMETERS} | " + "".join(f"{m} | " for m in measures) +
             "".join(f"{column} | " for column in references) +
             " | ".join(f"standalone AP50 seed {s}" for s in seeds) + " |",
             "|---|---|---|" + "---|" * (len(measures) + len(references) + len(seeds))]
    for arch in archs:
        lines.append(f"| {arch['name']} | {arch['predicted_ms']:.2f} | {parameters[arch['name']]:.4f} | " +
                     "".join(f"{scores[arch['name']][m]:.4f} | " for m in measures) +
                     "".join(f"{values[arch['name']]:.4f} | " for _, values in references.values()) +
                     " | ".join(f"{v:.3f}" for v in standalone[arch["name"]]) + " |")
    lines += ["", "| ranking | Kendall tau | Spearman rho | Kendall tau against one seed (mean over seeds) |",
              "|---|---|---|---|"]
    by_seed = [[standalone[a["name"]][k] for a in archs] for k in range(len(seeds))]   # AP50 columns
    taus = {}

    def ranking_row(label: str, score: List[float]) -> float:
        tau, rho = rank_correlations(score, mean_ap50)
        per_seed = statistics.mean(rank_correlations(score, column)[0] for column in by_seed)
        lines.append(f"| {label} | {tau:.3f} | {rho:.3f} | {per_seed:.3f} |")
        return tau

    for measure in measures:
        label = {SHIPPED_MEASURE: " (shipped)", CAPACITY_MEASURE: f" (the search's Q, w {capacity_weight:g})"}
        taus[measure] = ranking_row(f"{measure}{label.get(measure, '')}",
                                    [scores[a["name"]][measure] for a in archs])
    ranking_row(f"{PARAMETERS} (zero-cost reference: millions of trainable weights, no supernet)",
                [parameters[a["name"]] for a in archs])
    for label, values in references.values():
        ranking_row(label, [values[a["name"]] for a in archs])
    if len(seeds) > 1:
        pairs = list(itertools.combinations(by_seed, 2))
        correlations = [rank_correlations(first, second) for first, second in pairs]
        tau = statistics.mean(t for t, _ in correlations)
        rho = statistics.mean(r for _, r in correlations)
        label = (f"standalone seed {seeds[0]} vs seed {seeds[1]}" if len(seeds) == 2 else
                 f"standalone seeds {', '.join(seeds)} pairwise, mean of {len(pairs)}")
        lines.append(f"| {label} (the ceiling) | {tau:.3f} | {rho:.3f} | {tau:.3f} |")
    if len(seeds) > 2:   # one more training of each architecture, scored as the measures are: against a mean of seeds
        held_out = [rank_correlations(column, [statistics.mean(ap50) for ap50 in zip(*(by_seed[:k] + by_seed[k + 1:]))])
                    for k, column in enumerate(by_seed)]
        lines.append(f"| standalone: each seed against the mean of the others (mean over seeds) | "
                     f"{statistics.mean(t for t, _ in held_out):.3f} | {statistics.mean(r for _, r in held_out):.3f} | - |")
    if len(seeds) > 1:
        ceiling = ground_truth_ceiling([standalone[a["name"]] for a in archs])
        of_column = " (the ceiling of the first column)" if scores else ""
        lines += ["", f"ground truth: the architectures' true standalone AP50 spread by {ceiling.spread:.3f} (standard "
                  f"deviation, estimated), one training's by {ceiling.noise:.3f} around it (root mean square) once "
                  f"each seed's offset common to all architectures, which changes no ranking "
                  f"({ceiling.seed_offset:.3f}), is set apart; a "
                  f"bivariate-normal model puts a noise-free measure at Kendall tau {ceiling.tau_mean:.2f} against the "
                  f"mean of {len(seeds)} seeds{of_column} and two seeds at {ceiling.tau_seed_pair:.2f} against each other"]
    lines += ["", f"command: `python {' '.join(sys.argv)}`"]
    if scores:
        shipped = not SEARCH_OVERRIDE.value and os.path.abspath(CONFIG.value) == QUICKSTART_SEARCH
        lines += ["", f"Kendall tau ({'shipped defaults' if shipped else 'the search measure of this supernet'}): "
                      f"{taus[search_measure]:.3f}"]
    return "\n".join(lines) + "\n"


def main(argv):
    del argv
    if not shutil.which("taskset"):
        sys.exit("taskset (util-linux) is needed to pin each job to one CPU")
    if GROUND_TRUTH_ONLY.value and not STANDALONE_RESULTS.value and len(STANDALONE_SEEDS.value) < 2:
        sys.exit("--ground_truth_only needs two --standalone_seeds or more")
    if NUM_ARCHS.value < 3:
        sys.exit("--num_archs must be at least 3 for a rank correlation")
    if PROXY_STEPS.value < 0 or FINETUNE_STEPS.value < 0:
        sys.exit("--proxy_steps and --finetune_steps must be 0 (none) or more")
    if FINETUNE_STEPS.value and GROUND_TRUTH_ONLY.value:
        sys.exit("--finetune_steps starts from the supernet's weights: it needs a supernet (no --ground_truth_only)")
    started, work_dir = time.time(), WORK_DIR.value
    archs = architectures(work_dir, search_config())
    recorded = recorded_ground_truth(STANDALONE_RESULTS.value, archs) if STANDALONE_RESULTS.value else None
    if not recorded:
        claim_standalone_root(work_dir, archs)
    truth_seeds = recorded.seeds if recorded else STANDALONE_SEEDS.value
    jobs = [None if GROUND_TRUTH_ONLY.value else supernet_job(work_dir),
            *([] if recorded else standalone_jobs(work_dir, archs)), *proxy_jobs(work_dir, archs, truth_seeds)]
    run_pinned([job for job in jobs if job], JOBS.value)
    scores = None if GROUND_TRUTH_ONLY.value else one_shot_scores(work_dir, supernet_config(), archs)
    if scores:
        run_pinned([job for job in finetune_jobs(work_dir, archs, truth_seeds) if job], JOBS.value)
    references = {}
    if PROXY_STEPS.value:
        references[PROXY] = (proxy_label(), {a["name"]: standalone_ap50(proxy_dir(work_dir, a["name"])) for a in archs})
        references[PROXY_LOSS] = (proxy_loss_label(),
                                  {a["name"]: -mean_training_loss(proxy_dir(work_dir, a["name"])) for a in archs})
    if FINETUNE_STEPS.value:
        references[FINETUNED] = (finetuned_label(),
                                 {a["name"]: standalone_ap50(finetune_dir(work_dir, a["name"])) for a in archs})
    text = report(recorded or trained_ground_truth(work_dir, archs), archs, scores,
                  parameter_counts(standalone_config(), archs), (time.time() - started) / 60,
                  supernet_config().search.capacity_weight if scores else 0.0, references)
    write_results(NAME.value, text)


if __name__ == "__main__":
    app.run(main)

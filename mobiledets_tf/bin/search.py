"""mobiledets-search: latency-targeted TuNAS architecture search on a detection supernet.

    mobiledets-search --config=configs/experiments/search_quickstart.yaml --model_dir=runs/search \
        --cost_model=configs/cost_models/ibn_fused_tucker_cpu.json --target_ms=25
    mobiledets-search --config=... --space=ibn_fused_tucker --platform=edgetpu --cost_model=FILE \
        --target_ms=T0 --strategy=mirrored

Trains the shared weights of the supernet of --space/--platform and the controller together
(reference section 8), resuming from the latest checkpoint in --model_dir. TensorBoard curves of the
losses, quality Q, cost, reward and each decision's probabilities go to `search/`. At the end it
writes `searched_arch.yaml` (the controller's most likely architecture, an ArchSpec that
`mobiledets-train --arch=...` accepts) and `searched_arch.json` (its choices, predicted latency and
the final probabilities). With `search.finalists=N` the search ends with a finalist stage
(search/finalists.py): N architectures of the controller's final distribution near the target,
each trained from scratch for `search.finalist_steps` and scored by `search.finalist_measure` (its
AP50 on the validation split, or its detection loss averaged over that training); the best
becomes `searched_arch.yaml`, the controller's pick is kept as `controller_arch.yaml`, and
`finalists.json` lists every finalist's score. With `search.finalist_source=band` as well, no
supernet is trained: the finalists are drawn uniformly among the architectures predicted near the
target (a random search judged by short trainings). `--random_baseline=N` instead writes N random
architectures of the space predicted near the target, the baseline a searched architecture is
compared with.
"""
import json
import os
import sys

from absl import app, flags, logging

import mobiledets_tf  # noqa: F401  (selects Keras 2 before TensorFlow loads)
from mobiledets_tf import fileio
from mobiledets_tf.arch import ArchSpecError
from mobiledets_tf.bin import common
from mobiledets_tf.config import ConfigError, save_config
from mobiledets_tf.search.cost_model import CostModel, CostModelError
from mobiledets_tf.search.finalists import FINALIST_MEASURES, MEASURE_LABELS
from mobiledets_tf.search.space import SearchSpaceError
from mobiledets_tf.training.loop import TrainingDivergedError
from mobiledets_tf.training.strategy import make_strategy, split_cpu

common.define_config_flags()
MODEL_DIR = flags.DEFINE_string("model_dir", None, "Directory for checkpoints, summaries and the result.")
SPACE = flags.DEFINE_string("space", None, "Shortcut for --override=search.space=...")
PLATFORM = flags.DEFINE_string("platform", None, "Shortcut for --override=search.platform=...")
COST_MODEL = flags.DEFINE_string("cost_model", None, "Shortcut for --override=search.cost_model=...")
TARGET_MS = flags.DEFINE_float("target_ms", None, "Shortcut for --override=search.target_ms=...")
STRATEGY = flags.DEFINE_enum("strategy", "default", ["default", "mirrored"],
                             "Distribution strategy: every replica samples its own architecture.")
CPU_DEVICES = flags.DEFINE_integer("cpu_devices", 1, "Split the CPU into this many logical devices.")
RANDOM_BASELINE = flags.DEFINE_integer(
    "random_baseline", 0, "Instead of searching, write this many random architectures of the space predicted "
    "within --random_band of --target_ms (random_arch_K.yaml + random_archs.json), the search's baseline.")
RANDOM_BAND = flags.DEFINE_float("random_band", 0.05, "Relative latency band of --random_baseline.")
flags.mark_flag_as_required("model_dir")


def shortcut_overrides():
    values = (("search.space", SPACE.value), ("search.platform", PLATFORM.value),
              ("search.cost_model", COST_MODEL.value), ("search.target_ms", TARGET_MS.value))
    return [f"{key}={value!r}" for key, value in values if value is not None]


def write_random_baseline(config, cost_model) -> None:
    """Random architectures near the target, as ArchSpec files plus a JSON summary."""
    from mobiledets_tf.search.random_search import sample_near_target
    from mobiledets_tf.search.search_task import search_space_of
    from mobiledets_tf.search.tunas import architecture_name

    space, s = search_space_of(config), config.search
    if s.target_ms <= 0:
        raise ConfigError(f"search.target_ms must be a positive latency in ms, got {s.target_ms}")
    found = sample_near_target(space, cost_model, s.target_ms, RANDOM_BASELINE.value, band=RANDOM_BAND.value,
                               seed=s.seed)
    fileio.makedirs(MODEL_DIR.value)
    records = []
    for k, (indices, predicted) in enumerate(found):
        path = os.path.join(MODEL_DIR.value, f"random_arch_{k}.yaml")
        space.to_arch_spec(indices, name=f"{architecture_name('random', space, s.target_ms)}_{k}",
                           description=f"random architecture of {space.tag} predicted at {predicted:.2f} ms "
                                       f"(target {s.target_ms:g} ms)").save(path)
        records.append({"path": path, "indices": indices, "predicted_ms": predicted})
        print(f"{path}: predicted {predicted:.2f} ms")
    fileio.write_text_atomically(os.path.join(MODEL_DIR.value, "random_archs.json"),
                                 json.dumps({"target_ms": s.target_ms, "band": RANDOM_BAND.value,
                                             "architectures": records}, indent=2) + "\n")


def print_finalists(chosen, finalists, measure: str) -> None:
    print(f"finalists: {os.path.join(MODEL_DIR.value, 'finalists.json')}\n" + "\n".join(
        f"  {f.name}: predicted {f.predicted_ms:.2f} ms, {MEASURE_LABELS[measure]} {getattr(f, measure):.4f}"
        + (" (chosen)" if f is chosen else "") for f in finalists))


def finalists_how(config, finalists) -> str:
    s = config.search
    best = "highest" if FINALIST_MEASURES[s.finalist_measure] > 0 else "lowest"
    return (f", the best of {len(finalists)} finalists by the {best} {MEASURE_LABELS[s.finalist_measure]} over "
            f"{s.finalist_steps} standalone steps")


def chosen_score(config, chosen) -> dict:
    """The chosen finalist's score as searched_arch.json records it (finalist_ap50 or finalist_training_loss)."""
    measure = config.search.finalist_measure
    return {f"finalist_{measure}": getattr(chosen, measure)}


def choose_among_finalists(loop, controller_pick, strategy):
    """The finalist stage (search/finalists.py) after the search, whose `controller_pick` was written
    as controller_arch.yaml/json: the chosen finalist becomes searched_arch.yaml/json (written last, so
    a search that stopped in this stage has none)."""
    from mobiledets_tf.search.finalists import controller_finalists, run_finalists
    from mobiledets_tf.search.tunas import architecture_name

    s = loop.config.search
    chosen, finalists = run_finalists(loop.space, lambda: controller_finalists(loop.controller, loop.predicted_ms, s),
                                      MODEL_DIR.value, strategy, architecture_name("searched", loop.space, s.target_ms),
                                      loop.cost_model.describe())
    print_finalists(chosen, finalists, s.finalist_measure)
    return loop.write_result(chosen.indices, how=finalists_how(loop.config, finalists), finalist=chosen.name,
                             controller_arch=controller_pick.arch_path, **chosen_score(loop.config, chosen))


def random_search(config, cost_model, strategy):
    """search.finalist_source=band: no supernet; the finalist stage over architectures drawn uniformly
    near the target, the best written as searched_arch.yaml/json."""
    from mobiledets_tf.search.finalists import band_finalists, run_finalists
    from mobiledets_tf.search.search_task import search_space_of
    from mobiledets_tf.search.tunas import architecture_name, save_result

    space, s = search_space_of(config), config.search
    if s.target_ms <= 0:
        raise ConfigError(f"search.target_ms must be a positive latency in ms, got {s.target_ms}")
    logging.info("Random search of %s for %.2f ms: %d architectures predicted within %g%% of it, each trained "
                 "for %d steps and judged by its %s; cost model %s", space.tag, s.target_ms, s.finalists,
                 100 * s.finalist_band, s.finalist_steps, MEASURE_LABELS[s.finalist_measure], cost_model.describe())
    fileio.makedirs(MODEL_DIR.value)
    save_config(config, os.path.join(MODEL_DIR.value, "config.yaml"))
    chosen, finalists = run_finalists(space, lambda: band_finalists(space, cost_model, s), MODEL_DIR.value, strategy,
                                      architecture_name("searched", space, s.target_ms), cost_model.describe())
    print_finalists(chosen, finalists, s.finalist_measure)
    return save_result(space, chosen.indices, chosen.predicted_ms, MODEL_DIR.value, "searched_arch",
                       f"random search over {space.tag}{finalists_how(config, finalists)}", s.target_ms,
                       cost_model.describe(), finalist=chosen.name, **chosen_score(config, chosen))


def main(argv):
    del argv
    from mobiledets_tf.search.random_search import NoArchitectureNearTarget
    from mobiledets_tf.search.search_task import SearchTask
    from mobiledets_tf.search.tunas import SearchLoop

    try:
        config = common.load_config_from_flags(extra_overrides=shortcut_overrides())
        if not config.search.cost_model:
            raise ConfigError("give --cost_model=FILE (mobiledets-cost-model fit) and --target_ms")
        cost_model = CostModel.load(config.search.cost_model)
        if RANDOM_BASELINE.value > 0:
            write_random_baseline(config, cost_model)
            return
        split_cpu(CPU_DEVICES.value)
        strategy = make_strategy(STRATEGY.value, "")
        if config.search.finalists and config.search.finalist_source == "band":
            result = random_search(config, cost_model, strategy)
            print(f"searched architecture: {result.arch_path} (predicted {result.predicted_ms:.2f} ms, target "
                  f"{config.search.target_ms:g} ms)\nchoices: {result.json_path}")
            return
        task = SearchTask(config, strategy)
        loop = SearchLoop(task, cost_model, MODEL_DIR.value)
    except (ConfigError, CostModelError, SearchSpaceError, ArchSpecError, FileNotFoundError, NoArchitectureNearTarget,
            TrainingDivergedError, ValueError) as e:
        sys.exit(f"mobiledets-search: {e}")
    s = config.search
    reward = {"absolute": f"beta {s.reward_beta:g}", "mnas_soft": f"exponent {s.reward_exponent:g}",
              "mnas_hard": "exponent 0 within the target, -1 above"}[s.reward]
    controller_steps = f" + {s.controller_steps} of the controller alone" if s.controller_steps else ""
    logging.info("Searching %s (%d decisions, %.3g architectures) for %.2f ms on %d replica(s), global "
                 "batch %d, %d steps%s; reward %s (%s); cost model %s", task.space.tag, len(task.space.decisions),
                 float(task.space.size), s.target_ms, strategy.num_replicas_in_sync,
                 config.train.batch_size, config.train.steps, controller_steps, s.reward, reward,
                 cost_model.describe())
    if s.rl_delay >= 1 and not s.controller_steps:
        logging.warning("search.rl_delay %g with search.controller_steps 0: the controller never learns, so "
                        "the result is an untrained controller's pick (a supernet for scoring only)", s.rl_delay)
    fileio.makedirs(MODEL_DIR.value)
    save_config(config, os.path.join(MODEL_DIR.value, "config.yaml"))
    try:
        if config.search.finalists:
            result = choose_among_finalists(loop, loop.run(result_stem="controller_arch"), strategy)
        else:
            result = loop.run()
    except TrainingDivergedError as e:
        sys.exit(f"mobiledets-search: {e}")
    except (ConfigError, ArchSpecError, ValueError) as e:
        sys.exit(f"mobiledets-search: {e}")
    print(f"searched architecture: {result.arch_path} (predicted {result.predicted_ms:.2f} ms, target "
          f"{config.search.target_ms:g} ms)\nchoices and probabilities: {result.json_path}\n"
          f"train it: mobiledets-train --config=... --arch={result.arch_path} --model_dir=...")


def run():
    app.run(main)


if __name__ == "__main__":
    run()

"""The README's commands are the ones CI runs, and its statistics table is what the code computes."""
import os
import re

import pytest

from conftest import REPO_ROOT
from mobiledets_tf.models.detector import SSDLiteDetector
from mobiledets_tf.stats import model_stats


def _readme():
    with open(os.path.join(REPO_ROOT, "README.md")) as f:
        return f.read()


def test_ci_runs_the_readme_test_command():
    commands = re.findall(r"```bash\n(.+?)\n```", _readme())
    assert len(commands) >= 2 and "pytest" in commands[1] and "mobiledets-quickstart" in commands[0]
    with open(os.path.join(REPO_ROOT, ".ci", "run")) as f:
        ci_lines = [l.strip() for l in f if l.strip() and not l.startswith("#")]
    assert commands[1] in ci_lines


@pytest.mark.parametrize("arch", ["mobiledet_cpu", "mobilenet_v3_large", "mobilenet_v3_small", "mnasnet_a1"])
def test_readme_statistics_are_what_the_code_computes(arch):
    row = re.search(rf"^\| {arch} \| ([0-9.]+) B \| ([0-9.]+) M \| ([0-9.]+) M \|", _readme(), re.M)
    total = model_stats(SSDLiteDetector(arch).model)["total"]
    assert float(row.group(1)) == round(total["madds"] / 1e9, 3)
    assert float(row.group(2)) == round(total["params"] / 1e6, 3)
    assert float(row.group(3)) == round(total["trainable_params"] / 1e6, 3)

"""The machine record written into result files, and the emulation of another CPU that `make test` uses."""
import json
import os
import subprocess
import sys

import pytest
import torch

from minivar import environment


def test_record_names_torch_the_cpu_and_the_threads_and_is_json():
    rec = environment.record()
    assert rec["torch"] == torch.__version__ and rec["threads"] == torch.get_num_threads()
    assert rec["cpu"] and rec["cpu"] != "unknown" and rec["cpu_capability"] != "unknown"
    assert json.loads(json.dumps(rec)) == rec
    line = environment.describe(rec)
    assert rec["torch"] in line and f"{rec['threads']} thread" in line


def test_emulation_variables_are_recorded_and_take_effect():
    code = ("import json, torch; from minivar import environment; "
            "print(json.dumps(environment.record()))")
    env = {k: v for k, v in os.environ.items() if k not in environment.EMULATION_VARS}
    env.update(ATEN_CPU_CAPABILITY="default", OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    rec = json.loads(out.stdout)
    assert rec["cpu_capability"] == "DEFAULT" and rec["threads"] == 1
    assert rec["env"] == {"ATEN_CPU_CAPABILITY": "default", "OMP_NUM_THREADS": "1"}


@pytest.mark.portability
def test_the_portability_run_really_runs_on_another_instruction_set():
    """`make test` re-runs the portability tests with ATEN_CPU_CAPABILITY=default: make sure it is in use."""
    asked = os.environ.get("ATEN_CPU_CAPABILITY")
    if asked is None:
        pytest.skip("native run: the capability is whatever this CPU offers")
    assert environment.cpu_capability().lower() == asked.lower()

"""cluster.yaml is a valid Ray launcher config whose node types can hold every sweep's trials."""

from __future__ import annotations

import json
import pathlib

import jsonschema
import pytest
import ray.autoscaler
import yaml

from harness.spec import load_specs

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "cluster.yaml").read_text())
NODE_TYPES = CONFIG["available_node_types"]


def test_cluster_yaml_validates_against_rays_launcher_schema():
    schema = json.loads((pathlib.Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(CONFIG, schema)
    assert CONFIG["head_node_type"] in NODE_TYPES
    assert {"GPU", "TPU"} <= {r for t in NODE_TYPES.values() for r in t["resources"]}


def test_the_schema_check_can_fail():
    schema = json.loads((pathlib.Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(CONFIG | {"max_workers": "eight"}, schema)


@pytest.mark.parametrize("path", sorted((ROOT / "sweeps").glob("*.yaml")), ids=lambda p: p.name)
def test_some_node_type_can_hold_each_sweeps_trials(path):
    for sweep, _ in load_specs(path):
        need = {"CPU": sweep.resources.cpus or 1, "GPU": sweep.resources.gpus, "TPU": sweep.resources.tpus}
        if sweep.device == "cuda":
            need["GPU"] = max(need["GPU"], 1e-9)
        if sweep.device == "tpu":
            need["TPU"] = max(need["TPU"], 1)
        fits = [
            name for name, t in NODE_TYPES.items() if all(t["resources"].get(k, 0) >= v for k, v in need.items() if v)
        ]
        assert fits, f"{path.name}/{sweep.name} needs {need}; no node type of cluster.yaml has it"


def test_the_head_dashboard_listens_on_localhost_only():
    """The Jobs API behind the dashboard runs any command it is sent: reach it through `ray dashboard` (SSH)."""
    start = " ".join(CONFIG["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in start
    assert "0.0.0.0" not in start and "dashboard-host=::" not in start
    assert all("0.0.0.0" not in " ".join(CONFIG.get(key, [])) for key in ("worker_start_ray_commands",))

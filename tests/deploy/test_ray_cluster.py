"""``federation.ray_address``: validated at the edge, and passed to Ray as a connection (not a local Ray),
without needing a cluster: Flower's ``run_simulation`` is replaced by a recorder."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedrisk.config.experiment import validate
from fedrisk.core.errors import FedriskError
from fedrisk.federation.backends import RayCluster, ray_backend_config, resolve_backend


@pytest.mark.parametrize("address", ["auto", "10.0.0.5:6379", "head.bank.example:6379", "ray://head:10001"])
def test_cluster_addresses_are_accepted_with_the_ray_backend(address: str) -> None:
    config = validate({"federation": {"backend": "ray", "ray_address": address}})
    assert resolve_backend(config.federation.backend, config.federation.ray_address) == RayCluster(address)


def test_without_an_address_the_backends_are_unchanged() -> None:
    assert resolve_backend("ray", None) == "ray" and resolve_backend("inprocess", None) == "inprocess"


@pytest.mark.parametrize(
    ("federation", "field", "words"),
    [
        ({"ray_address": "10.0.0.5:6379"}, "federation", "set federation.backend = 'ray'"),
        ({"backend": "ray", "ray_address": "head"}, "federation.ray_address", "host:port"),
        ({"backend": "ray", "ray_address": "10.0.0.5:6379 --extra"}, "federation.ray_address", "host:port"),
    ],
)
def test_bad_cluster_settings_are_one_clear_error(federation: dict, field: str, words: str) -> None:
    with pytest.raises(FedriskError) as info:
        validate({"federation": federation})
    assert str(info.value).startswith(f"{field}:") and words in str(info.value)


def test_a_cluster_gets_a_connection_and_a_local_ray_gets_its_cpus() -> None:
    local = ray_backend_config(num_cpus=2, client_num_cpus=1)
    assert local["init_args"]["num_cpus"] == 2 and local["init_args"]["address"] == "local"
    cluster = ray_backend_config(num_cpus=2, client_num_cpus=1, address="10.0.0.5:6379")
    assert cluster["init_args"]["address"] == "10.0.0.5:6379"
    assert (
        "num_cpus" not in cluster["init_args"] and "num_gpus" not in cluster["init_args"]
    )  # Ray refuses both
    assert cluster["client_resources"] == {"num_cpus": 1, "num_gpus": 0.0}


def test_the_driver_passes_the_cluster_address_to_flowers_simulation(tmp_path: Path, monkeypatch) -> None:
    """The vertical driver on a config with ``ray_address`` reaches ``run_simulation`` with that address."""
    import flwr.simulation

    from fedrisk.data.setting import build_setting
    from fedrisk.deploy.experiment import federated_outcome

    seen: dict = {}

    def record(**kwargs) -> None:
        seen.update(kwargs)
        raise RuntimeError("no cluster here")  # stop before anything would need one

    monkeypatch.setattr(flwr.simulation, "run_simulation", record)
    config = validate(
        {
            "topology": "vertical",
            "seeds": [0],
            "world": {"n_firms": 600},
            "federation": {"backend": "ray", "ray_address": "10.0.0.5:6379"},
        }
    )
    with pytest.raises(RuntimeError, match="no cluster here"):
        federated_outcome(config, build_setting(config, 0), 0, tmp_path, None)
    assert seen["backend_config"]["init_args"]["address"] == "10.0.0.5:6379"
    assert seen["num_supernodes"] == 3

"""The gradient-boosted trees report section: present for gbdt runs only, with shares and per-tree cost."""

from fedrisk.report.importance import trees_section


def test_trees_section_shows_holder_shares_and_cost_per_tree():
    results = {
        "importance": {"siloed": {"bank": 1.0}, "federated": {"bank": 0.45, "tax": 0.4, "supply_chain": 0.15}},
        "cost": {"trees": 28, "seconds_per_tree": 6.5, "encrypt_seconds_per_tree": 2.0, "bytes_per_tree": 1.5e6,
                 "protection": "he", "key_bits": 2048},
    }  # fmt: skip
    text = trees_section(results, ["siloed", "centralized", "federated"])
    assert "| tax | 0% | 40% |" in text and "| bank | 100% | 45% |" in text
    assert "Paillier 2048 bits" in text and "1.5 MB" in text


def test_no_trees_section_for_other_models():
    assert trees_section({"cost": {"bytes_sent": 10}}, ["siloed", "federated"]) is None

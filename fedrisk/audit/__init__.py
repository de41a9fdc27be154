"""Audits run after an experiment's methods: what the trained models and the protocol give away.

`membership` (is this firm in the training set?), `label_leakage` (what a passive vertical holder learns
of the bank's labels from the gradients it receives), and the robustness and fairness audits beside them.
"""

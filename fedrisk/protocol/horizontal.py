"""What crosses a bank's boundary in horizontal federation: message names, record names and keys.

The ServerApp (`fedrisk.federation.horizontal_server`) and the banks' ClientApp
(`fedrisk.federation.horizontal_client`) both import this module, so neither reaches into the other.

Messages, in the order a run sends them (Flower Message API ``<type>.<action>``):

==================  ==========================================  ==========================================
message             server -> bank                              bank -> server
==================  ==========================================  ==========================================
``query.schema``    --                                          ``config.schema``: columns, levels, bounds
``train.stats``     ``config.schema``: the merged schema        ``arrays.moments`` + ``metrics.num-examples``
``query.prep``      ``config.prep``: the shared encoder (JSON)  ``config.prep_digest``
``train``           ``arrays``: global model, ``config``        ``arrays``: local model, ``metrics``
``evaluate``        ``arrays``: global model, ``config``        ``metrics``: ``loss``, ``ks``, weight
==================  ==========================================  ==========================================

``train`` and ``evaluate`` are the strategy's own messages (Flower's record names ``arrays``/``config``/
``metrics``, ``server-round`` in the config, FedProx's ``proximal-mu``); fedrisk adds ``prep_digest``.
Under SecAgg+ every ``train`` message is Flower's legacy SecAgg+ exchange and ``config.task = "stats"``
marks the statistics round (`fedrisk.federation.horizontal_secagg`).
"""

from __future__ import annotations

SCHEMA_ACTION = "schema"
STATS_ACTION = "stats"
PREP_ACTION = "prep"

ARRAYS_KEY = "arrays"
CONFIG_KEY = "config"
METRICS_KEY = "metrics"
"""Record names, as Flower's strategies use them."""

WEIGHT_KEY = "num-examples"
"""The metric every reply's weight travels under (Flower's default ``weighted_by_key``)."""
ROUND_KEY = "server-round"
"""The round number Flower's strategies put into every ``train``/``evaluate`` config."""
PROXIMAL_MU_KEY = "proximal-mu"
"""FedProx's proximal weight in the ``train`` config."""

TASK_KEY = "task"
STATS_TASK = "stats"
SCHEMA_KEY = "schema"
PREP_KEY = "prep"
PREP_DIGEST_KEY = "prep_digest"
MOMENTS_KEY = "moments"

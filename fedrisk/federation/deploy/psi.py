"""PSI between the parties' own nodes, as Flower messages (deployment engine).

Why: in simulation the driver aligns the holders in one process (`fedrisk.protocol.psi.align_parties`),
which needs every partner's full id list in the label holder's process. On the deployment engine each
holder's ids stay on its own node; only PSI protocol messages (blinded ids, the partner's encrypted
filter and its re-encrypted answer) travel, through the label holder's ServerApp:

1. ``query.psi_request`` -> label holder's node: it reads its own ids, makes one secret key per partner
   (kept in its ``context.state``, which never leaves the node) and replies with blinded ids per partner;
2. ``query.psi_serve`` -> every partner's node at once (each computes on its own machine): its setup
   (its whole set, encrypted and compressed) and its answer to the blinded ids;
3. ``query.psi_intersect`` -> label holder's node: it removes its blinding and replies, per partner, with
   the ids of its own that the partner holds (the label holder's own ServerApp learns them; the partner
   learns the label holder's set size, exactly as in simulation: docs/psi.md).

The ServerApp then keeps only its applicants, in applicant order, and shuffles each list with the run's
seed exactly as `align_parties` does (`fedrisk.protocol.rosters.shuffled_roster`), so training sees the same
rosters as in simulation. Each step is sharded over the node's CPUs (`fedrisk.protocol.psi_roles`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

from fedrisk.core.errors import FedriskError
from fedrisk.federation.nodes import party_nodes, read_party_table, resolve_party
from fedrisk.federation.vertical_client import SEED_KEY, VERTICAL_CONFIG_KEY, from_array, to_array
from fedrisk.federation.vertical_server import LABEL_HOLDER_KEY, OUTPUT_DIR_KEY, PLAN_KEY, Plan
from fedrisk.protocol import psi_roles
from fedrisk.protocol.psi import _SAME_ID_FIX, _validated_ids
from fedrisk.protocol.rosters import shuffled_roster

#: Run-config key: ``"nodes"`` = the ServerApp aligns the holders by PSI messages before training.
PSI_KEY = "vertical-psi"
PSI_ON_NODES = "nodes"
#: What the alignment cost, written into ``output-dir`` for the driver.
PSI_FILE = "psi-alignment.json"

REQUEST = "query.psi_request"
SERVE = "query.psi_serve"
INTERSECT = "query.psi_intersect"
MESSAGE_TYPES = (REQUEST, SERVE, INTERSECT)

_STATE = "psi.keys"
_GROUP = "psi"


def _bytes_array(data: bytes):
    return to_array(np.frombuffer(data, dtype=np.uint8))


def _bytes_of(array) -> bytes:
    return from_array(array).tobytes()


def _own_ids(context: Context) -> list[str]:
    party = resolve_party(context)
    return _validated_ids(party.name, read_party_table(party.data_path).ids)


def _workers(n: int) -> int:
    return psi_roles.default_workers(n)


# --- the holders' side (answered by the deployment ClientApp) ------------------------------------------


def handle(message: Message, context: Context) -> Message:
    """Answer one PSI message on a holder's node."""
    kind = message.metadata.message_type
    if kind == REQUEST:
        return _request(message, context)
    if kind == SERVE:
        return _serve(message, context)
    if kind == INTERSECT:
        return _intersect(message, context)
    raise ValueError(f"not a PSI message: {kind}")


def _request(message: Message, context: Context) -> Message:
    partners = list(json.loads(str(message.content.config_records["psi"]["partners"])))
    ids = _own_ids(context)
    workers = _workers(len(ids))
    keys, arrays = {}, {}
    for partner in partners:
        keys[partner] = key = psi_roles.new_client_key()
        for i, request in enumerate(psi_roles.create_requests(key, ids, workers)):
            arrays[f"{partner}/{i}"] = _bytes_array(request)
    context.state[_STATE] = ConfigRecord({p: k for p, k in keys.items()})
    info = {"n_client": len(ids), "shards": psi_roles.shard_sizes(len(ids), workers)}
    content = RecordDict({"psi": ConfigRecord({"info": json.dumps(info)}), "requests": _record(arrays)})
    return Message(content, reply_to=message)


def _serve(message: Message, context: Context) -> Message:
    control = message.content.config_records["psi"]
    fpr = float(control["fpr"])
    n_client = int(control["n_client"])
    arrays = message.content.array_records["requests"]
    requests = [_bytes_of(arrays[k]) for k in sorted(arrays, key=int)]
    ids = _own_ids(context)
    setup, responses, chosen, structure = psi_roles.serve(
        ids, requests, n_client, fpr=fpr if fpr > 0 else None, workers=_workers(n_client + len(ids))
    )
    out = {"setup": _bytes_array(setup), **{str(i): _bytes_array(r) for i, r in enumerate(responses)}}
    info = {"fpr": chosen, "structure": structure, "n_server": len(ids)}
    content = RecordDict({"psi": ConfigRecord({"info": json.dumps(info)}), "responses": _record(out)})
    return Message(content, reply_to=message)


def _intersect(message: Message, context: Context) -> Message:
    if _STATE not in context.state:
        raise FedriskError("psi", "this node has no PSI key for the run", "send query.psi_request first")
    keys = context.state[_STATE]
    shards = list(json.loads(str(message.content.config_records["psi"]["shards"])))
    ids = np.asarray(_own_ids(context))
    found = {}
    for partner in json.loads(str(message.content.config_records["psi"]["partners"])):
        arrays = message.content.array_records[f"answer.{partner}"]
        responses = [_bytes_of(arrays[str(i)]) for i in range(len(shards))]
        positions = psi_roles.intersect(
            bytes(keys[partner]), _bytes_of(arrays["setup"]), responses, shards, _workers(len(ids))
        )
        found[partner] = to_array(ids[positions].astype(str))
    del context.state[_STATE]  # the keys are single-use
    return Message(RecordDict({"shared": _record(found)}), reply_to=message)


def _record(arrays: Mapping) -> ArrayRecord:
    return ArrayRecord(dict(arrays))


# --- the label holder's ServerApp side ------------------------------------------------------------------


def _exchange(grid: Grid, kind: str, contents: Mapping[int, RecordDict]) -> dict[int, RecordDict]:
    messages = [Message(c, dst_node_id=n, message_type=kind, group_id=_GROUP) for n, c in contents.items()]
    replies = {}
    for reply in grid.send_and_receive(messages):
        if reply.has_error():  # a RecordingGrid raises first and names the party
            raise RuntimeError(f"node {reply.metadata.src_node_id} failed on {kind}: {reply.error.reason}")
        replies[reply.metadata.src_node_id] = reply.content
    missing = sorted(set(contents) - set(replies))
    if missing:
        raise RuntimeError(f"no reply from nodes {missing} to {kind}")
    return replies


def align_on_nodes(
    grid: Grid,
    nodes: Mapping[str, int],
    label_holder: str,
    partners: Sequence[str],
    applicants: np.ndarray,
    seed: int,
    fpr: float | None = None,
) -> tuple[dict[str, np.ndarray], dict]:
    """Run the three PSI steps over ``grid``; the shared ids per partner (as `align_parties` orders them).

    Returns ``(rosters, info)``; ``info`` has seconds per step and each partner's set size, fpr, structure
    and intersection size.
    """
    started = time.perf_counter()
    bank = nodes[label_holder]
    control = ConfigRecord({"partners": json.dumps(list(partners))})
    (content,) = _exchange(grid, REQUEST, {bank: RecordDict({"psi": control})}).values()
    requested = json.loads(str(content.config_records["psi"]["info"]))
    requests = content.array_records["requests"]
    t_request = time.perf_counter() - started

    serve = {}
    for partner in partners:
        shards = {str(i): requests[f"{partner}/{i}"] for i in range(len(requested["shards"]))}
        serve[nodes[partner]] = RecordDict(
            {
                "psi": ConfigRecord({"n_client": requested["n_client"], "fpr": float(fpr or 0.0)}),
                "requests": ArrayRecord(shards),
            }
        )
    answers = _exchange(grid, SERVE, serve)
    t_serve = time.perf_counter() - started - t_request

    ask = RecordDict(
        {
            "psi": ConfigRecord(
                {"partners": json.dumps(list(partners)), "shards": json.dumps(requested["shards"])}
            )
        }
    )
    served = {}
    for partner in partners:
        answer = answers[nodes[partner]]
        ask[f"answer.{partner}"] = ArrayRecord(dict(answer.array_records["responses"].items()))
        served[partner] = json.loads(str(answer.config_records["psi"]["info"]))
    (content,) = _exchange(grid, INTERSECT, {bank: ask}).values()
    shared_arrays = content.array_records["shared"]
    t_intersect = time.perf_counter() - started - t_request - t_serve

    index = pd.Index(np.asarray(applicants).astype(str))
    rosters, info = {}, {"n_client": requested["n_client"], "partners": {}}
    for partner in partners:
        found = index.isin(from_array(shared_arrays[partner]).astype(str))
        if not found.any():
            raise FedriskError(
                "data.parties", f"no firm ids shared between {label_holder!r} and {partner!r}", _SAME_ID_FIX
            )
        rosters[partner] = shuffled_roster(np.asarray(applicants)[found], partner, seed)
        info["partners"][partner] = {**served[partner], "shared": int(found.sum())}
    info.update(
        seconds=time.perf_counter() - started,
        request_seconds=t_request,
        serve_seconds=t_serve,
        intersect_seconds=t_intersect,
    )
    return rosters, info


def with_node_alignment(inner: ServerApp) -> ServerApp:
    """``inner`` (the vertical ServerApp), preceded by PSI on the nodes when the run config asks for it.

    The aligned plan (the driver's plan with the rosters filled in) goes into ``output-dir``, and ``inner``
    runs with the run config pointing at it; the alignment's cost goes into `PSI_FILE`.
    """
    outer = ServerApp()

    @outer.main()
    def _main(grid: Grid, context: Context) -> None:
        rc = context.run_config
        if str(rc.get(PSI_KEY, "")) != PSI_ON_NODES:
            inner(grid, context)
            return
        from fedrisk.config.vertical import VerticalConfig

        out = Path(str(rc[OUTPUT_DIR_KEY]))
        plan = Plan.load(Path(str(rc[PLAN_KEY])))
        label_holder = str(rc[LABEL_HOLDER_KEY])
        vcfg = VerticalConfig.model_validate_json(str(rc[VERTICAL_CONFIG_KEY]))
        rosters, info = align_on_nodes(
            grid, party_nodes(grid), label_holder, list(plan.rosters), plan.applicants, int(rc[SEED_KEY]),
            vcfg.psi_fpr,
        )  # fmt: skip
        plan.rosters = rosters
        out.mkdir(parents=True, exist_ok=True)
        aligned = plan.save(out / "plan-aligned.npz")
        (out / PSI_FILE).write_text(json.dumps(info, indent=1))
        view = Context(
            run_id=context.run_id,
            node_id=context.node_id,
            node_config=context.node_config,
            state=context.state,
            run_config={**rc, PLAN_KEY: str(aligned)},
        )
        inner(grid, view)

    return outer

"""`{{name}}`: a wasmgate CRI runtime hook, a Wasm component of `{{world_id}}`.

The host's CRI proxy asks for two lists of events once per loaded version: `subscriptions()`,
the calls `pre` judges before the runtime sees them (allow, deny or adjust them), and
`post-subscriptions()`, the calls whose outcome `post` sees after the runtime answered. The host
may reuse an instance after a call succeeds, so anything that must last goes in
`wasi:keyvalue`. An exception escaping a method traps the instance: the host then fails the call
(or lets it through, for a hook configured `failure = "open"`).

What it does, as `wasmgate plugin new` wrote it: it subscribes to `create-container`, and allows
every new container, adding one container annotation when the `wasi:config` key `annotation`
holds `KEY=VALUE`. A malformed value denies the call, naming the key, rather than letting a
container start without what the operator asked for. It wants no outcomes.

See wasmgate's `plugins/rust/hook-policy` and `plugins/rust/hook-inject` for more.
"""

from __future__ import annotations

from typing import List, Optional

import wit_world.exports
from componentize_py_types import Err
from wit_world.imports import wasi_config_store
from wit_world.imports.cri_types import (
    Adjustment,
    Decision,
    Decision_Adjust,
    Decision_Allow,
    Decision_Deny,
    Event,
    Outcome,
    Request,
    Request_CreateContainer,
)

NAME = "{{name}}"

#: The `wasi:config` key: `KEY=VALUE`, an annotation for every new container.
ANNOTATION = "annotation"


class Hook(wit_world.exports.Hook):
    """The exported `wasmgate:plugin/hook` interface."""

    def subscriptions(self) -> List[Event]:
        return [Event.CREATE_CONTAINER]

    def post_subscriptions(self) -> List[Event]:
        # None: `post` does nothing with an outcome, and a hook that only judges requests costs
        # nothing after the runtime answers.
        return []

    def pre(self, req: Request) -> Decision:
        if isinstance(req, Request_CreateContainer):
            # Read on every call: an operator may change the key between calls.
            try:
                setting = wasi_config_store.get(ANNOTATION)
            except Err as e:
                return Decision_Deny(f"{NAME}: read wasi:config key {ANNOTATION}: {e.value.value}")
            return decide(setting)
        return Decision_Allow()

    def post(self, req: Request, outcome: Outcome) -> None:
        # The world requires it, though the host calls it for no event while
        # `post_subscriptions` is empty.
        pass


def decide(setting: Optional[str]) -> Decision:
    """The decision for a new container, given the `annotation` setting."""
    if setting is None:
        return Decision_Allow()
    key, eq, value = setting.partition("=")
    if not eq or not key.strip():
        return Decision_Deny(f'{NAME}: wasi:config key {ANNOTATION} is "{setting}", not KEY=VALUE')
    return Decision_Adjust(annotate(key.strip(), value.strip()))


def annotate(key: str, value: str) -> Adjustment:
    """An adjustment that sets one annotation; the fields left empty change nothing."""
    return Adjustment(
        annotations=[(key, value)],
        remove_annotations=[],
        labels=[],
        remove_labels=[],
        env=[],
        remove_env=[],
        mounts=[],
        remove_mounts=[],
        devices=[],
        remove_devices=[],
        resources=None,
        args=None,
        image=None,
    )

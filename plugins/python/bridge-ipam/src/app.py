"""`bridge-ipam` in Python: the component's entry point.

The wasmgate host (or the stock `wasmtime run -S keyvalue -S config`) calls one export of
`wasmgate:plugin/network` per CNI command, each in a fresh instance. This module is the thin
layer that componentize-py looks for: the `Network` class implementing the exported interface,
plus adapters that put the real `wasi:keyvalue` bucket and `wasi:config` store behind the
`ipam.Kv` and `config.Settings` protocols. The logic is in the `bridge_ipam` package.

Each export opens the keyvalue bucket before anything else, as the Rust plugin does, so that a
store that cannot be opened is reported first (code 5) by both.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import wit_world.exports
from componentize_py_types import Err
from wit_world.imports import atomics, wasi_config_store, wasi_keyvalue_store
from wit_world.imports.cni_types import (
    AddOutcome,
    Attachment,
    AttachmentRef,
    Invocation,
    NetConf,
)

from bridge_ipam import ops
from bridge_ipam.errors import IO_FAILURE, err
from bridge_ipam.ipam import KvError


def _kv_error(e: wasi_keyvalue_store.Error) -> str:
    if isinstance(e, wasi_keyvalue_store.Error_NoSuchStore):
        return "no such store"
    if isinstance(e, wasi_keyvalue_store.Error_AccessDenied):
        return "access denied"
    return e.value


class WasiKv:
    """`wasi:keyvalue` bucket `""`: the only identifier the stock wasmtime CLI accepts.

    The generated bindings raise `Err(error)` for a failed call; this turns that into `KvError`
    with the message the Rust plugin gives, so `ipam` never sees binding types.
    """

    def __init__(self, bucket: wasi_keyvalue_store.Bucket) -> None:
        self.bucket = bucket

    @staticmethod
    def open() -> "WasiKv":
        try:
            return WasiKv(wasi_keyvalue_store.open(""))
        except Err as e:
            raise err(IO_FAILURE, f'open keyvalue bucket "": {_kv_error(e.value)}')

    def close(self) -> None:
        # Drop the handle now rather than whenever the garbage collector gets to it.
        self.bucket.__exit__(None, None, None)

    def get(self, key: str) -> Optional[bytes]:
        try:
            return self.bucket.get(key)
        except Err as e:
            raise KvError(_kv_error(e.value))

    def set(self, key: str, value: bytes) -> None:
        try:
            self.bucket.set(key, value)
        except Err as e:
            raise KvError(_kv_error(e.value))

    def delete(self, key: str) -> None:
        try:
            self.bucket.delete(key)
        except Err as e:
            raise KvError(_kv_error(e.value))

    def list_keys(self, cursor: Optional[int]) -> Tuple[List[str], Optional[int]]:
        try:
            page = self.bucket.list_keys(cursor)
        except Err as e:
            raise KvError(_kv_error(e.value))
        return page.keys, page.cursor

    def increment(self, key: str, delta: int) -> int:
        try:
            return atomics.increment(self.bucket, key, delta)
        except Err as e:
            raise KvError(_kv_error(e.value))


class WasiSettings:
    """`wasi:config/store`: operator defaults for keys the net-conf leaves out."""

    def get(self, key: str) -> Optional[str]:
        try:
            return wasi_config_store.get(key)
        except Err as e:
            raise err(IO_FAILURE, f"read wasi:config key {key}: {e.value.value}")


class Network(wit_world.exports.Network):
    """The exported `wasmgate:plugin/network@0.1.0` interface."""

    def versions(self) -> List[str]:
        return ops.versions()

    def add(self, conf: NetConf, call: Invocation) -> AddOutcome:
        kv = WasiKv.open()
        try:
            return ops.add(conf, call, kv, WasiSettings())
        finally:
            kv.close()

    def del_(self, conf: NetConf, call: Invocation) -> None:
        kv = WasiKv.open()
        try:
            ops.del_(conf, call, kv)
        finally:
            kv.close()

    def check(self, conf: NetConf, call: Invocation) -> Optional[Attachment]:
        kv = WasiKv.open()
        try:
            return ops.check(conf, call, kv, WasiSettings())
        finally:
            kv.close()

    def status(self, conf: NetConf) -> None:
        kv = WasiKv.open()
        try:
            ops.status(conf, kv, WasiSettings())
        finally:
            kv.close()

    def gc(self, conf: NetConf, valid: List[AttachmentRef]) -> List[AttachmentRef]:
        kv = WasiKv.open()
        try:
            return ops.gc(conf, valid, kv)
        finally:
            kv.close()

"""Native unit tests of the plugin's logic, ported from the Rust plugin's `#[cfg(test)]` modules.

They run under the machine's CPython against the generated bindings (pure dataclasses), with an
in-memory keyvalue store and config map in place of the WASI imports:

    plugins/python/build   # generates target/bindings
    cd plugins/python/bridge-ipam
    PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=src:target/bindings \\
      ../../../target/tools/venv/bin/python -m unittest discover -s tests

What only the component can show (the WASI wiring in app.py, the Wasm build itself) is covered
by tests/tests/network_plugins.rs, which runs this plugin and the Rust one side by side.
"""

from __future__ import annotations

import threading
import unittest
from typing import Dict, List, Optional, Tuple

from componentize_py_types import Err
from wit_world.imports.cni_types import AttachmentRef, Invocation, NetConf

from bridge_ipam import config, ops, prev, rust
from bridge_ipam.errors import (
    ADDRESS_IN_USE,
    ALREADY_EXISTS,
    DECODE_FAILURE,
    INCOMPATIBLE_VERSION,
    INVALID_CONFIG,
    IO_FAILURE,
    NOT_AVAILABLE,
    POOL_EXHAUSTED,
)
from bridge_ipam.ipam import Ipam, KvError
from bridge_ipam.names import fnv1a64, host_veth_name
from bridge_ipam.pool import Pool, PoolError, parse_cidr


class FakeKv:
    """An in-memory bucket shared by threads like one store shared by instances: `list-keys` in
    pages of `page` keys, counters as decimal text like wasmtime's in-memory provider."""

    def __init__(self, page: int = 3) -> None:
        self.map: Dict[str, bytes] = {}
        self.page = page
        self.fail_on: Optional[str] = None
        self.lock = threading.Lock()

    def _check(self, key: str) -> None:
        if self.fail_on is not None and self.fail_on in key:
            raise KvError("injected failure")

    def value(self, key: str) -> Optional[str]:
        v = self.map.get(key)
        return None if v is None else v.decode()

    def keys(self) -> List[str]:
        return sorted(self.map)

    def get(self, key: str) -> Optional[bytes]:
        self._check(key)
        return self.map.get(key)

    def set(self, key: str, value: bytes) -> None:
        self._check(key)
        self.map[key] = value

    def delete(self, key: str) -> None:
        self._check(key)
        self.map.pop(key, None)

    def list_keys(self, cursor: Optional[int]) -> Tuple[List[str], Optional[int]]:
        start = cursor or 0
        keys = self.keys()
        page = keys[start : start + self.page]
        nxt = start + len(page)
        return page, (nxt if nxt < len(keys) else None)

    def increment(self, key: str, delta: int) -> int:
        self._check(key)
        with self.lock:
            new = int(self.map.get(key, b"0")) + delta
            self.map[key] = str(new).encode()
            return new


class FakeSettings:
    def __init__(self, **values: str) -> None:
        self.values = values

    def get(self, key: str) -> Optional[str]:
        return self.values.get(key)


RAW = '{"cniVersion":"1.1.0","name":"demo","type":"wasmgate-cni","podcidr":"10.240.0.0/24"}'


def conf(raw: str = RAW, **kw: Optional[str]) -> NetConf:
    fields = dict(
        cni_version="1.1.0",
        name="demo",
        type="wasmgate-cni",
        prev_result=None,
        runtime_config=None,
        args=None,
        raw=raw,
    )
    fields.update(kw)
    return NetConf(**fields)  # type: ignore[arg-type]


def call(cid: str = "c1", ifname: str = "eth0", args: List[Tuple[str, str]] = []) -> Invocation:
    return Invocation(
        container_id=cid, netns=f"/var/run/netns/{cid}", ifname=ifname, args=list(args)
    )


def ip(s: str) -> int:
    value = rust.parse_ipv4(s)
    assert value is not None, s
    return value


def pool(cidr: str, gw: Optional[str] = None) -> Pool:
    net, prefix = parse_cidr(cidr)
    return Pool.new(net, prefix, None if gw is None else ip(gw))


class CniTest(unittest.TestCase):
    def fails(self, code: int, f, *args) -> str:  # type: ignore[no-untyped-def]
        """Runs `f`, expects a CNI error with `code`, returns its message."""
        with self.assertRaises(Err) as caught:
            f(*args)
        e = caught.exception.value
        self.assertEqual(e.code, code, e.msg)
        return e.msg


class RustCompat(unittest.TestCase):
    def test_ipv4_parsing_is_as_strict_as_rust(self) -> None:
        self.assertEqual(rust.parse_ipv4("10.240.0.1"), 0x0AF00001)
        for bad in ["10.240.0.01", "10.240.0", "1.2.3.256", " 1.2.3.4", "1.2.3.4 ", "١.2.3.4",
                    "1.2.3.+4", "", "1..2.3"]:
            self.assertIsNone(rust.parse_ipv4(bad), bad)

    def test_debug_quoting(self) -> None:
        self.assertEqual(rust.debug_str('a"b\\\n\x01é'), '"a\\"b\\\\\\n\\u{1}é"')

    def test_json_display_matches_serde_json(self) -> None:
        self.assertEqual(rust.json_display(rust.loads('{"b":1,"a":[1.5,"x",null]}')),
                         '{"a":[1.5,"x",null],"b":1}')
        self.assertEqual(rust.json_display(1e-05), "0.00001")
        self.assertEqual(rust.json_display(1e300), "1e+300")
        self.assertEqual(rust.json_display(rust.loads("-0")), "-0.0")
        self.assertRaises(rust.JsonError, rust.loads, "NaN")


class Names(unittest.TestCase):
    def test_fnv1a64_matches_reference_vectors(self) -> None:
        self.assertEqual(fnv1a64(b""), 0xCBF29CE484222325)
        self.assertEqual(fnv1a64(b"a"), 0xAF63DC4C8601EC8C)
        self.assertEqual(fnv1a64(b"foobar"), 0x85944171F73967E8)

    def test_veth_name(self) -> None:
        name = host_veth_name("c1", "eth0")
        self.assertEqual(name, "wg" + f"{fnv1a64(b'c1/eth0'):016x}"[:12])
        self.assertNotEqual(name, host_veth_name("c1", "eth1"))


class Pools(unittest.TestCase):
    def test_parses_and_masks(self) -> None:
        self.assertEqual(parse_cidr("10.240.0.77/24"), (ip("10.240.0.0"), 24))
        for bad in ["fd00::/64", "10.240.0.0", "10.240.0/24", "10.240.0.0/33", "10.240.0.0/-1",
                    "x/24", ""]:
            self.assertRaises(PoolError, parse_cidr, bad)

    def test_nth_walks_hosts_skipping_gateway(self) -> None:
        p = pool("10.240.0.0/24", "10.240.0.100")
        self.assertEqual(p.nth(0), ip("10.240.0.1"))
        self.assertEqual(p.nth(99), ip("10.240.0.101"))
        self.assertEqual(p.size(), 253)
        whole = pool("0.0.0.0/0")
        self.assertEqual(whole.nth(whole.size() - 1), ip("255.255.255.254"))

    def test_rejects_tiny_subnets_and_foreign_gateways(self) -> None:
        self.assertRaises(PoolError, Pool.new, ip("10.0.0.0"), 31, None)
        for gw in ["10.240.0.0", "10.240.0.255", "10.241.0.1"]:
            self.assertRaises(PoolError, Pool.new, ip("10.240.0.0"), 24, ip(gw))


class Configs(CniTest):
    def test_defaults_and_wasi_config(self) -> None:
        c = config.parse(RAW, FakeSettings())
        self.assertEqual((c.pool.cidr(), c.bridge, c.mtu, c.mode), ("10.240.0.0/24", "wgbr0",
                                                                    1500, config.Mode.BRIDGE))
        c = config.parse(RAW, FakeSettings(bridge="cfgbr", mtu="1450"))
        self.assertEqual((c.bridge, c.mtu), ("cfgbr", 1450))
        msg = self.fails(INVALID_CONFIG, config.parse, RAW, FakeSettings(mtu="big"))
        self.assertIn("wasi:config key mtu", msg)

    def test_bad_keys_are_code_7_and_named(self) -> None:
        for raw, key in [
            ("{}", "podcidr"), ('{"podcidr":24}', "podcidr"), ('{"podcidr":"fd00::/64"}', "podcidr"),
            ('{"podcidr":"10.240.0.0/31"}', "podcidr"),
            ('{"podcidr":"10.240.0.0/24","gateway":"10.241.0.1"}', "gateway"),
            ('{"podcidr":"10.240.0.0/24","bridge":"a/b"}', "bridge"),
            ('{"podcidr":"10.240.0.0/24","mtu":1500.5}', "mtu"),
            ('{"podcidr":"10.240.0.0/24","mode":"macvlan"}', "mode"),
            ('{"podcidr":"10.240.0.0/24","dns":{"bogus":[]}}', "dns"),
        ]:
            msg = self.fails(INVALID_CONFIG, config.parse, raw, FakeSettings())
            self.assertTrue(msg.startswith(key), f"{raw}: {msg}")
        self.fails(DECODE_FAILURE, config.parse, "[1]", FakeSettings())


class Allocation(CniTest):
    def test_allocates_sequentially_and_records_state(self) -> None:
        kv = FakeKv()
        ipam = Ipam(kv, "n")
        p = pool("10.240.0.0/24")
        self.assertEqual(ipam.allocate(p, "c1", "eth0"), ip("10.240.0.2"))
        self.assertEqual(ipam.allocate(p, "c2", "eth0"), ip("10.240.0.3"))
        self.assertEqual(kv.value("n/owner/10.240.0.2"), "c1/eth0")
        self.assertEqual(kv.value("n/alloc/c2/eth0"), "10.240.0.3")
        self.assertEqual(kv.value("n/claim/10.240.0.3"), "1")
        self.assertEqual(ipam.in_use(), 2)

    def test_release_frees_for_reuse_and_is_idempotent(self) -> None:
        kv = FakeKv()
        ipam = Ipam(kv, "n")
        p = pool("10.0.0.0/30")
        a = ipam.allocate(p, "c1", "eth0")
        self.fails(POOL_EXHAUSTED, ipam.allocate, p, "c2", "eth0")
        self.assertEqual(ipam.release("c1", "eth0"), a)
        self.assertIsNone(ipam.release("c1", "eth0"))
        self.assertEqual(kv.keys(), ["n/cursor"])
        self.assertEqual(ipam.allocate(p, "c2", "eth0"), a)

    def test_failed_record_rolls_the_claim_back(self) -> None:
        kv = FakeKv()
        kv.fail_on = "/alloc/"
        msg = self.fails(IO_FAILURE, Ipam(kv, "n").allocate, pool("10.240.0.0/24"), "c1", "eth0")
        self.assertIn("n/alloc/c1/eth0", msg)
        self.assertEqual(kv.keys(), ["n/cursor"])

    def test_concurrent_allocations_never_share_an_address(self) -> None:
        kv = FakeKv()
        p = pool("10.240.0.0/24")
        got: List[int] = []

        def worker(t: int) -> None:
            ipam = Ipam(kv, "n")
            got.extend(ipam.allocate(p, f"c{t}-{i}", "eth0") for i in range(30))

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(len(set(got)), 240)
        self.assertEqual(Ipam(kv, "n").in_use(), 240)


class Commands(CniTest):
    def test_add_in_bridge_mode(self) -> None:
        out = ops.add(conf(), call(), FakeKv(), FakeSettings())
        att = out.attachment
        assert att is not None and att.bridge is not None
        self.assertEqual(att.bridge.addresses, ["10.240.0.1/24"])
        self.assertEqual(att.container_addresses, ["10.240.0.2/24"])
        self.assertEqual(out.result.ips[0].iface, 1)
        self.assertEqual(out.result.interfaces[0].name, host_veth_name("c1", "eth0"))

    def test_add_in_ptp_mode_routes_a_host_32(self) -> None:
        raw = '{"podcidr":"10.240.0.0/24","mode":"ptp","mtu":1400}'
        att = ops.add(conf(raw), call(), FakeKv(), FakeSettings()).attachment
        assert att is not None
        self.assertIsNone(att.bridge)
        self.assertEqual(att.veth.host_addresses, ["10.240.0.1/32"])
        self.assertEqual(att.host_routes[0].dst, "10.240.0.2/32")

    def test_add_twice_is_102_and_chains_after_prev_result(self) -> None:
        kv, s = FakeKv(), FakeSettings()
        ops.add(conf(), call(), kv, s)
        self.assertEqual(self.fails(ALREADY_EXISTS, ops.add, conf(), call(), kv, s),
                         "attachment c1/eth0 already exists")
        previous = ('{"interfaces":[{"name":"a"},{"name":"b","sandbox":"/ns"}],'
                    '"ips":[{"address":"192.168.1.5/24","interface":1}],'
                    '"dns":{"nameservers":["9.9.9.9"]}}')
        r = ops.add(conf(prev_result=previous), call("c2", "eth1"), kv, s).result
        self.assertEqual([i.name for i in r.interfaces][:2], ["a", "b"])
        self.assertEqual(r.ips[1].iface, 3)
        assert r.dns is not None
        self.assertEqual(r.dns.nameservers, ["9.9.9.9"])
        self.fails(DECODE_FAILURE, ops.add, conf(prev_result='{"ips":"nope"}'), call("c3"), kv, s)

    def test_del_check_status_gc(self) -> None:
        kv, s = FakeKv(), FakeSettings()
        raw = '{"podcidr":"10.0.0.0/29"}'
        for i in range(5):
            ops.add(conf(raw), call(f"c{i}"), kv, s)
        self.assertEqual(self.fails(NOT_AVAILABLE, ops.status, conf(raw), kv, s),
                         "address pool 10.0.0.0/29 exhausted")
        ops.del_(conf("{}"), call("c3"), kv)
        ops.del_(conf("{}"), call("c3"), kv)
        ops.status(conf(raw), kv, s)
        have = '{"ips":[{"address":"10.0.0.2/29"}]}'
        self.assertIsNotNone(ops.check(conf(raw, prev_result=have), call("c0"), kv, s))
        self.fails(INVALID_CONFIG, ops.check, conf(raw), call("c0"), kv, s)
        released = ops.gc(conf(raw), [AttachmentRef(container_id="c0", ifname="eth0")], kv)
        self.assertEqual(sorted(r.container_id for r in released), ["c1", "c2", "c4"])
        self.assertEqual(Ipam(kv, "demo").in_use(), 1)

    def test_version_name_and_requested_addresses(self) -> None:
        kv, s = FakeKv(), FakeSettings()
        self.fails(INCOMPATIBLE_VERSION, ops.add, conf(cni_version="0.2.0"), call(), kv, s)
        self.fails(INVALID_CONFIG, ops.status, conf(name="a/b"), kv, s)
        self.assertEqual(ops.versions(), ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
        out = ops.add(conf(), call("c1", args=[("IP", "10.240.0.50")]), kv, s)
        self.assertEqual(out.result.ips[0].address, "10.240.0.50/24")
        asked = conf(runtime_config='{"ips":["10.240.0.50/24"]}')
        self.fails(ADDRESS_IN_USE, ops.add, asked, call("c2"), kv, s)
        self.fails(INVALID_CONFIG, ops.add, conf(runtime_config='{"ips":["10.240.0.1"]}'),
                   call("c3"), kv, s)


class PrevResults(unittest.TestCase):
    def test_parses_and_ignores_extra_fields(self) -> None:
        p = prev.parse('{"interfaces":[{"name":"lo","socketPath":"/s"}],'
                       '"ips":[{"address":"10.240.0.7/24","interface":0}],'
                       '"routes":[{"dst":"10.0.0.0/8","advmss":1400}]}')
        self.assertEqual(p.interfaces()[0].name, "lo")
        self.assertTrue(p.has_address(ip("10.240.0.7")))
        self.assertFalse(p.has_address(ip("10.240.0.8")))


if __name__ == "__main__":
    unittest.main()

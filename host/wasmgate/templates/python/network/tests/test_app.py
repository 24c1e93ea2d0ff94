"""Unit tests of src/app.py, natively under CPython: `./build --test`."""

import unittest

from componentize_py_types import Err
from wit_world.imports.cni_types import Invocation

import app


def call(**args: str) -> Invocation:
    return Invocation(
        container_id="c1", netns="/var/run/netns/x", ifname="eth0", args=list(args.items())
    )


class NetworkTest(unittest.TestCase):
    def test_the_host_veth_name_is_derived_from_the_call(self) -> None:
        self.assertEqual(app.host_veth_name("c1", "eth0"), "wg9e27a0abdbb0")
        self.assertNotEqual(app.host_veth_name("c2", "eth0"), "wg9e27a0abdbb0")

    def test_the_pod_address_comes_from_cni_args(self) -> None:
        self.assertIsNone(app.pod_address(call()))
        self.assertEqual(app.pod_address(call(IP="10.240.0.5/24")), "10.240.0.5/24")
        for bad in ["10.240.0.5", "10.240.0.5/33", "fd00::1/129", "x/24"]:
            with self.assertRaises(Err) as e:
                app.pod_address(call(IP=bad))
            self.assertEqual(e.exception.value.code, app.INVALID_ENV, bad)

    def test_check_expects_what_add_built(self) -> None:
        c = call(IP="10.240.0.5/24")
        plan = app.attachment(c)
        self.assertEqual(plan.container_addresses, ["10.240.0.5/24"])
        self.assertEqual(app.result(c, plan).ips[0].address, "10.240.0.5/24")
        self.assertEqual(app.attachment(c), plan)


if __name__ == "__main__":
    unittest.main()

"""Unit tests of src/app.py, natively under CPython: `./build --test`."""

import unittest

from componentize_py_types import Err
from wit_world.imports.csi_types import ErrorCode

import app


class StorageTest(unittest.TestCase):
    def test_the_driver_name_is_the_daemons_or_the_plugins(self) -> None:
        self.assertEqual(app.plugin_info("x.csi.example.com").name, "x.csi.example.com")
        self.assertEqual(app.plugin_info(None).name, app.NAME)

    def test_node_info_needs_the_node_id(self) -> None:
        self.assertEqual(app.node_info("node-1").node_id, "node-1")
        with self.assertRaises(Err) as e:
            app.node_info(None)
        self.assertEqual(e.exception.value.code, ErrorCode.FAILED_PRECONDITION)

    def test_unimplemented_rpcs_say_which(self) -> None:
        with self.assertRaises(Err) as e:
            app.Controller().create_volume(None)  # type: ignore[arg-type]
        self.assertEqual(e.exception.value.code, ErrorCode.UNIMPLEMENTED)
        self.assertEqual(e.exception.value.message, f"{app.NAME}: CreateVolume is not implemented")


if __name__ == "__main__":
    unittest.main()

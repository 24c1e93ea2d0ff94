"""Unit tests of src/app.py, natively under CPython: `./build --test`."""

import unittest

from wit_world.imports.cri_types import Decision_Adjust, Decision_Allow, Decision_Deny, Event

import app


class HookTest(unittest.TestCase):
    def test_subscribes_to_new_containers_and_allows_them_without_the_key(self) -> None:
        self.assertEqual(app.Hook().subscriptions(), [Event.CREATE_CONTAINER])
        self.assertEqual(app.Hook().post_subscriptions(), [])
        self.assertEqual(app.decide(None), Decision_Allow())

    def test_annotates_with_the_key(self) -> None:
        decision = app.decide("example.com/team = a=b")
        self.assertEqual(decision, Decision_Adjust(app.annotate("example.com/team", "a=b")))

    def test_denies_a_malformed_key_naming_it(self) -> None:
        for bad in ["no-equals", "=value"]:
            decision = app.decide(bad)
            assert isinstance(decision, Decision_Deny), bad
            self.assertTrue(decision.value.startswith(app.NAME), decision.value)
            self.assertIn("annotation", decision.value)


if __name__ == "__main__":
    unittest.main()

"""`bridge-ipam` in Python: a port of `plugins/rust/bridge-ipam`, module for module.

`app.py` (beside this package) wires the real WASI imports into [`ops`](ops.py); everything in
this package is plain logic over two small protocols, `ipam.Kv` and `config.Settings`, so the
same code runs natively under CPython in `tests/`.

Modules, in the order a call flows through them:
- `ops`: the five CNI commands;
- `config`: the net-conf keys; `prev`: `prevResult`; `pool`: IPv4 maths;
- `ipam`: race-free allocation using only `wasi:keyvalue/atomics.increment`;
- `plan`: the attachment and the CNI result; `names`: the host veth name;
- `errors`: the CNI error codes; `rust`: the few Rust std and serde behaviours (strict address
  parsing, `{:?}` quoting, JSON number display, serde's error wording) that the Rust plugin's
  answers depend on, so that both plugins answer alike.
"""

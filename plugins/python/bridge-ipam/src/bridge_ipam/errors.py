"""CNI error codes, in one place.

Codes 1-99 are the spec's well-known ones; 100 and up are this plugin's own. A failure is raised
as `componentize_py_types.Err(CniError)`: componentize-py turns that exception into the `err` case
of the export's `result`, so the host sees a CNI error, not a trap.
"""

from componentize_py_types import Err
from wit_world.imports.cni_types import CniError

#: The network configuration names a cniVersion this plugin does not speak.
INCOMPATIBLE_VERSION = 1
#: The state store (wasi:keyvalue or wasi:config) failed.
IO_FAILURE = 5
#: JSON content (raw config, prevResult) could not be decoded.
DECODE_FAILURE = 6
#: The network configuration (or the call's state) is invalid.
INVALID_CONFIG = 7
#: STATUS: the plugin cannot serve ADDs.
NOT_AVAILABLE = 50
#: ADD for an attachment that is already allocated (the spec forbids ADD twice without DEL).
ALREADY_EXISTS = 102
#: ADD found no free address in the pool.
POOL_EXHAUSTED = 110
#: ADD asked for a specific address that another attachment holds.
ADDRESS_IN_USE = 111

#: What every failing function raises.
CniFailure = Err


def err(code: int, msg: str, details: str = "") -> "Err[CniError]":
    """The exception to raise for a CNI error."""
    return Err(CniError(code=code, msg=msg, details=details))


def invalid(msg: str) -> "Err[CniError]":
    return err(INVALID_CONFIG, msg)

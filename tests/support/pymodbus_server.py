#!/usr/bin/python3
"""An independent Modbus/TCP server for gaswatch's tests, on Debian's pymodbus.

Usage: pymodbus_server.py PORT MAP_JSON

MAP_JSON maps unit ids to register tables; each table is [start, [values...]]
with 0-based wire addresses. A table that is not given is empty, so any read
of it answers exception 02 (illegal data address). A unit id that is not in
the map is ignored by pymodbus (no answer at all: the client times out).

    {"1": {"holding": [0, [1, 2, 3]], "input": [100, [7, 8]]}, "2": {...}}

Prints READY on stdout once listening. Exits when stdin closes (the test
process died) or on SIGTERM/SIGKILL.
"""

import asyncio
import json
import os
import sys
import threading

try:
    import pymodbus
    from pymodbus.datastore import (
        ModbusSequentialDataBlock,
        ModbusServerContext,
        ModbusSlaveContext,
    )
    from pymodbus.server import StartAsyncTcpServer
except ImportError as exc:  # pragma: no cover
    print(f"NO_PYMODBUS {exc}: apt-get install python3-pymodbus", flush=True)
    sys.exit(3)


class EmptyBlock(ModbusSequentialDataBlock):
    """A table with no registers (pymodbus 3.0 cannot build an empty one)."""

    def __init__(self):
        super().__init__(0, [0])

    def validate(self, address, count=1):
        return False


def block(spec):
    if spec is None:
        return EmptyBlock()
    start, values = spec
    return ModbusSequentialDataBlock(int(start), [int(v) & 0xFFFF for v in values])


def build_context(units):
    slaves = {}
    for unit, tables in units.items():
        slaves[int(unit)] = ModbusSlaveContext(
            hr=block(tables.get("holding")),
            ir=block(tables.get("input")),
            co=EmptyBlock(),
            di=EmptyBlock(),
            # Addresses as on the wire (pymodbus otherwise adds 1).
            zero_mode=True,
        )
    return ModbusServerContext(slaves=slaves, single=False)


def exit_when_parent_goes():
    try:
        sys.stdin.read()
    finally:
        os._exit(0)


async def main(port, units):
    server = await StartAsyncTcpServer(
        context=build_context(units),
        address=("127.0.0.1", port),
        defer_start=True,
        # Restarting on the same port must not fail on TIME_WAIT sockets.
        allow_reuse_address=True,
    )
    task = asyncio.create_task(server.serve_forever())
    await server.serving
    print(f"READY pymodbus {pymodbus.__version__}", flush=True)
    await task


if __name__ == "__main__":
    threading.Thread(target=exit_when_parent_goes, daemon=True).start()
    asyncio.run(main(int(sys.argv[1]), json.loads(sys.argv[2])))

#!/usr/bin/python3
"""An independent Modbus server for gaswatch's tests, on Debian's pymodbus.

Usage: pymodbus_server.py PORT MAP_JSON [TRANSPORT]

TRANSPORT is "tcp" (Modbus/TCP, the default), "rtu_over_tcp" (RTU frames
over TCP, pymodbus's own RTU framer) or "rtu" (RTU on a serial port: the
script opens two pseudo-terminals, serves pymodbus's serial server on the
first and relays bytes between it and the second, whose path it prints;
PORT is ignored). The relay stands in for the null-modem cable `socat`
would make, which is not installed everywhere.

MAP_JSON maps unit ids to tables; each table is [start, [values...]] with
0-based wire addresses. A table that is not given is empty, so any read of it
answers exception 02 (illegal data address). A unit id that is not in the map
is ignored by pymodbus (no answer at all: the client times out).

    {"1": {"holding": [0, [1, 2, 3]], "input": [100, [7, 8]],
           "coil": [0, [1, 0, 1]], "discrete_input": [10, [0, 1]],
           "encode": [{"table": "holding", "address": 20, "type": "f32",
                       "order": "CDAB", "value": -1.5}]},
     "2": {...}}

"encode" entries are encoded by pymodbus's BinaryPayloadBuilder (byte order
and word order from the four-letter order: ABCD big/big, CDAB big bytes and
little words, BADC little/big, DCBA little/little) and written at their
address; types u16 i16 u32 i32 u64 i64 f32 f64 and string (with "length"
registers, NUL padded; BADC strings via the builder's repack). A table that
has encoded registers holds exactly the registers given, no more.

Prints "READY pymodbus VERSION [PATH]" on stdout once serving. Exits when stdin
closes (the test process died) or on SIGTERM/SIGKILL.
"""

import asyncio
import json
import os
import sys
import threading

try:
    import pymodbus
    from pymodbus.constants import Endian
    from pymodbus.datastore import (
        ModbusSequentialDataBlock,
        ModbusServerContext,
        ModbusSlaveContext,
        ModbusSparseDataBlock,
    )
    from pymodbus.framer.rtu_framer import ModbusRtuFramer
    from pymodbus.payload import BinaryPayloadBuilder
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


def encode(entry):
    """Registers of one encoded value, as pymodbus lays them out."""
    order = entry.get("order", "ABCD")
    little_bytes = order in ("BADC", "DCBA")
    little_words = order in ("CDAB", "DCBA")
    kind = entry["type"]
    value = entry["value"]
    if kind == "string":
        builder = BinaryPayloadBuilder(
            byteorder=Endian.Little if little_bytes else Endian.Big,
            wordorder=Endian.Big,
            repack=little_bytes,
        )
        builder.add_string(value)
        regs = builder.to_registers()
        return regs + [0] * (int(entry["length"]) - len(regs))
    builder = BinaryPayloadBuilder(
        byteorder=Endian.Little if little_bytes else Endian.Big,
        wordorder=Endian.Little if little_words else Endian.Big,
    )
    add = {
        "u16": builder.add_16bit_uint,
        "i16": builder.add_16bit_int,
        "u32": builder.add_32bit_uint,
        "i32": builder.add_32bit_int,
        "u64": builder.add_64bit_uint,
        "i64": builder.add_64bit_int,
        "f32": builder.add_32bit_float,
        "f64": builder.add_64bit_float,
    }[kind]
    add(value)
    return builder.to_registers()


def block(spec, encoded, bits=False):
    if encoded:
        values = dict(encoded)
        if spec is not None:
            start, listed = spec
            for i, v in enumerate(listed):
                values[int(start) + i] = bool(v) if bits else int(v) & 0xFFFF
        return ModbusSparseDataBlock(values)
    if spec is None:
        return EmptyBlock()
    start, values = spec
    if bits:
        return ModbusSequentialDataBlock(int(start), [bool(v) for v in values])
    return ModbusSequentialDataBlock(int(start), [int(v) & 0xFFFF for v in values])


def build_context(units):
    slaves = {}
    for unit, tables in units.items():
        encoded = {"holding": {}, "input": {}}
        for entry in tables.get("encode", []):
            regs = encode(entry)
            target = encoded[entry["table"]]
            for i, reg in enumerate(regs):
                target[int(entry["address"]) + i] = reg
        slaves[int(unit)] = ModbusSlaveContext(
            hr=block(tables.get("holding"), encoded["holding"]),
            ir=block(tables.get("input"), encoded["input"]),
            co=block(tables.get("coil"), None, bits=True),
            di=block(tables.get("discrete_input"), None, bits=True),
            # Addresses as on the wire (pymodbus otherwise adds 1).
            zero_mode=True,
        )
    return ModbusServerContext(slaves=slaves, single=False)


def exit_when_parent_goes():
    try:
        sys.stdin.read()
    finally:
        os._exit(0)


def relay(loop, src, dst):
    """Copies whatever arrives on master fd `src` to master fd `dst`."""

    def on_readable():
        try:
            data = os.read(src, 4096)
        except OSError:
            return
        if data:
            os.write(dst, data)

    loop.add_reader(src, on_readable)


async def serve_serial(context):
    import tty

    from pymodbus.server.async_io import ModbusSerialServer

    # Two pseudo-terminals joined back to back: pymodbus on one slave, the
    # client on the other. Both slaves stay open here, so neither master ever
    # reads EIO while the client closes and reopens its side.
    m_server, s_server = os.openpty()
    m_client, s_client = os.openpty()
    for fd in (s_server, s_client):
        tty.setraw(fd)
    server = ModbusSerialServer(
        context,
        ModbusRtuFramer,
        port=os.ttyname(s_server),
        baudrate=19200,
        # Pseudo-terminals here refuse PARENB (tcsetattr: EINVAL).
        parity="N",
        stopbits=1,
        bytesize=8,
    )
    await server.start()
    loop = asyncio.get_running_loop()
    relay(loop, m_server, m_client)
    relay(loop, m_client, m_server)
    print(f"READY pymodbus {pymodbus.__version__} {os.ttyname(s_client)}", flush=True)
    await asyncio.Event().wait()


async def main(port, units, transport):
    context = build_context(units)
    if transport == "rtu":
        await serve_serial(context)
        return
    kwargs = {}
    if transport == "rtu_over_tcp":
        kwargs["framer"] = ModbusRtuFramer
    server = await StartAsyncTcpServer(
        context=context,
        address=("127.0.0.1", port),
        defer_start=True,
        # Restarting on the same port must not fail on TIME_WAIT sockets.
        allow_reuse_address=True,
        **kwargs,
    )
    task = asyncio.create_task(server.serve_forever())
    await server.serving
    print(f"READY pymodbus {pymodbus.__version__}", flush=True)
    await task


if __name__ == "__main__":
    threading.Thread(target=exit_when_parent_goes, daemon=True).start()
    transport = sys.argv[3] if len(sys.argv) > 3 else "tcp"
    asyncio.run(main(int(sys.argv[1]), json.loads(sys.argv[2]), transport))

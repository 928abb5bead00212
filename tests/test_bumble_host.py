"""transports.bumble_host's guard on Bumble's GATT client: a response to a request that was
given up on (its future cancelled, as when a radio is torn down mid-command) is dropped
instead of raising InvalidStateError into the asyncio loop; a response someone waits
for still reaches them."""

from __future__ import annotations

import asyncio

from bumble import att, gatt_client

import transports.bumble_host  # noqa: F401  (installs the guard)


def _client() -> gatt_client.Client:
    client = object.__new__(gatt_client.Client)  # no bearer: only the response path runs
    client._bearer_id = "[test]"
    client.pending_request = att.ATT_Read_Request(attribute_handle=3)
    return client


def test_a_response_nobody_waits_for_is_dropped() -> None:
    async def main() -> None:
        client = _client()
        client.pending_response = asyncio.get_running_loop().create_future()
        client.pending_response.cancel()
        client.on_gatt_pdu(att.ATT_Read_Response(attribute_value=b"late"))  # no raise

        waiting = asyncio.get_running_loop().create_future()
        client.pending_response = waiting
        response = att.ATT_Read_Response(attribute_value=b"on time")
        client.on_gatt_pdu(response)
        assert waiting.result() is response

    asyncio.run(main())

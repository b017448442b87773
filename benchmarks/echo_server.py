"""The floor for the gRPC figures: a bare echo on the idlink server set-up.

Same grpc.aio server, options and call interceptor as ``idlink serve``; the
handlers answer from memory (no thread hop, no store), with replies of a
given size. ``python -m benchmarks.echo_server --listen 127.0.0.1:PORT --reply-bytes N``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

import grpc
from grpc import aio

from idlink.service.server import (
    DEFAULT_MAX_CONCURRENT_CALLS,
    DEFAULT_MAX_STREAMS,
    MAX_MESSAGE_BYTES,
    CallInterceptor,
)

SERVICE = "bench.Echo"


async def main(listen: str, reply_bytes: int, batch_reply_bytes: int) -> None:
    reply = b"r" * reply_bytes
    batch_reply = b"b" * batch_reply_bytes

    async def unary(request: bytes, context: aio.ServicerContext) -> bytes:
        return reply

    async def batch(request: bytes, context: aio.ServicerContext) -> bytes:
        return batch_reply

    async def stream(requests, context: aio.ServicerContext):
        async for _ in requests:
            yield reply

    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Unary": grpc.unary_unary_rpc_method_handler(unary),
            "Batch": grpc.unary_unary_rpc_method_handler(batch),
            "Stream": grpc.stream_stream_rpc_method_handler(stream),
        },
    )
    server = aio.server(
        interceptors=[CallInterceptor(DEFAULT_MAX_CONCURRENT_CALLS, DEFAULT_MAX_STREAMS)],
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.keepalive_time_ms", 60_000),
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ],
    )
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(listen)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", required=True)
    parser.add_argument("--reply-bytes", type=int, default=300)
    parser.add_argument("--batch-reply-bytes", type=int, default=300_000)
    args = parser.parse_args()
    from idlink.service.server import configure_logging

    configure_logging("INFO")
    logging.getLogger().setLevel(logging.INFO)
    asyncio.run(main(args.listen, args.reply_bytes, args.batch_reply_bytes))

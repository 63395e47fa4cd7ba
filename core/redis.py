"""The process's Redis clients: a synchronous one (one bounded connection pool per
process), for asyncio code one client per event loop, and for the front door one shared
connection per event loop."""

import asyncio
import contextlib
import os
import socket
import weakref
from collections import deque
from functools import cache

import hiredis
import redis
import redis.asyncio as aioredis
from django.conf import settings
from redis.connection import parse_url


def redis_configured() -> bool:
    return bool(settings.REDIS_URL)


_databases: dict[str, int] = {}


def redis_database() -> int:
    """The database number ``REDIS_URL`` selects (0 when it names none)."""
    url = settings.REDIS_URL
    if url not in _databases:
        _databases[url] = int(parse_url(url).get("db") or 0) if url else 0
    return _databases[url]


@cache
def get_redis() -> redis.Redis:
    """Synchronous client on a blocking pool: under a connect storm callers wait for a
    free connection instead of failing with "Too many connections"."""
    pool = redis.BlockingConnectionPool.from_url(
        settings.REDIS_URL,
        max_connections=settings.REDIS_MAX_CONNECTIONS,
        timeout=5,
        socket_timeout=5,
        socket_connect_timeout=5,
        health_check_interval=30,
        decode_responses=True,  # the pool's connections decode, not the client
    )
    return redis.Redis(connection_pool=pool)


def reset_redis() -> None:
    """Forget the cached client (after a fork, or in tests that change REDIS_URL)."""
    if get_redis.cache_info().currsize:
        get_redis().close()
    get_redis.cache_clear()


# --- one multiplexed connection per event loop ---------------------------------------------
# redis-py's asyncio client costs more CPU per command than the command costs Redis
# (measured on the front door: 45 % of a refusal's CPU in the client, its pool and its
# retries). Redis answers a connection's commands in the order they were sent, so the
# requests of one event loop can share ONE connection: each command is written at once
# and its answer taken from the replies in turn, parsed by hiredis. No pool to wait for,
# and under load many commands travel in one packet.

COMMAND_TIMEOUT_SECONDS = 5


class SharedConnection:
    """Commands from any number of coroutines of one event loop over one connection."""

    def __init__(self, url: str):
        self.options = parse_url(url)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.waiting: deque[asyncio.Future] = deque()
        self.connecting: asyncio.Future | None = None

    async def execute(self, *args):
        """The command's reply (bytes decoded as UTF-8), or its error raised as redis-py's
        ``ResponseError``; ``ConnectionError`` when the connection is lost."""
        if self.writer is None:
            await self._connect()
        return await self._send(args)

    def _send(self, args) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        self.waiting.append(future)
        self.writer.write(hiredis.pack_command(args))
        return future

    async def evalsha(self, script: str, sha: str, keys, args):
        try:
            return await self.execute("EVALSHA", sha, len(keys), *keys, *args)
        except redis.exceptions.ResponseError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
            return await self.execute("EVAL", script, len(keys), *keys, *args)

    async def _connect(self) -> None:
        if self.connecting is not None:  # another coroutine is connecting: wait for it
            return await asyncio.shield(self.connecting)
        self.connecting = asyncio.get_running_loop().create_future()
        try:
            options = self.options
            ssl = options.get("connection_class") is redis.connection.SSLConnection
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(options["host"], options.get("port", 6379), ssl=ssl),
                COMMAND_TIMEOUT_SECONDS,
            )
            self.reader, self.writer = reader, writer
            parser = hiredis.Reader(encoding="utf-8", replyError=redis.exceptions.ResponseError)
            asyncio.get_running_loop().create_task(self._read(reader, parser))
            # Written before any other command can be (no await in between), so that
            # every command that follows runs authenticated, on the right database.
            handshake = []
            if options.get("password"):
                auth = [options["password"]]
                if options.get("username"):
                    auth.insert(0, options["username"])
                handshake.append(self._send(("AUTH", *auth)))
            if options.get("db"):
                handshake.append(self._send(("SELECT", options["db"])))
            for reply in handshake:
                await reply
            self.connecting.set_result(None)
        except BaseException as exc:
            self._drop(exc)
            self.connecting.set_exception(redis.exceptions.ConnectionError(str(exc)))
            self.connecting.exception()  # retrieved: no "never retrieved" warning
            raise redis.exceptions.ConnectionError(str(exc)) from exc
        finally:
            self.connecting = None

    async def _read(self, reader: asyncio.StreamReader, parser) -> None:
        try:
            while True:
                if self.waiting:
                    data = await asyncio.wait_for(reader.read(65536), COMMAND_TIMEOUT_SECONDS)
                else:
                    data = await reader.read(65536)
                if not data:
                    raise ConnectionResetError("Redis closed the connection")
                parser.feed(data)
                while (reply := parser.gets()) is not False:
                    future = self.waiting.popleft()
                    if future.done():
                        continue
                    if isinstance(reply, redis.exceptions.ResponseError):
                        future.set_exception(reply)
                    else:
                        future.set_result(reply)
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
            self._drop(exc)

    def _drop(self, exc: BaseException) -> None:
        """Forget the connection; every command waiting on it fails (the next command
        connects again)."""
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None
        error = redis.exceptions.ConnectionError(f"Redis connection lost: {exc}")
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(error)

    async def close(self) -> None:
        writer = self.writer
        self._drop(ConnectionAbortedError("closed"))
        if writer is not None:
            with contextlib.suppress(OSError):
                await writer.wait_closed()


_shared: dict[asyncio.AbstractEventLoop, SharedConnection] = {}


def shared_connection() -> SharedConnection:
    """This event loop's shared connection to ``REDIS_URL``."""
    loop = asyncio.get_running_loop()
    connection = _shared.get(loop)
    if connection is None:
        for stale in [other for other in _shared if other.is_closed()]:
            del _shared[stale]
        connection = _shared[loop] = SharedConnection(settings.REDIS_URL)
    return connection


async def shared_connection_close() -> None:
    """Close the running loop's shared connection (tests running short-lived loops)."""
    connection = _shared.pop(asyncio.get_running_loop(), None)
    if connection is not None:
        await connection.close()


# --- the asyncio client of each event loop ----------------------------------------------

_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aioredis.Redis] = (
    weakref.WeakKeyDictionary()
)


def client_name() -> str:
    """How this process's asyncio connections (the live hub's subscription, presence)
    show in Redis ``CLIENT LIST`` (ops: which process holds which subscription)."""
    return f"livestream-hub:{socket.gethostname()}:{os.getpid()}"


def async_redis() -> aioredis.Redis:
    """The asyncio Redis client of the running event loop (its connections belong to
    that loop), on a bounded blocking pool: under a connect storm callers wait for a
    connection instead of failing with "Too many connections". The process's one
    pub/sub connection holds one connection of the pool while anything is watched."""
    loop = asyncio.get_running_loop()
    client = _async_clients.get(loop)
    if client is None:
        pool = aioredis.BlockingConnectionPool.from_url(
            settings.REDIS_URL,
            max_connections=settings.REDIS_MAX_CONNECTIONS,
            timeout=5,
            socket_connect_timeout=5,
            socket_keepalive=True,
            health_check_interval=30,
            decode_responses=True,
            client_name=client_name(),
        )
        client = aioredis.Redis(connection_pool=pool)
        _async_clients[loop] = client
    return client


async def close_async_redis() -> None:
    """Close the running loop's client (at shutdown, and in tests before the loop ends)."""
    client = _async_clients.pop(asyncio.get_running_loop(), None)
    if client is not None:
        await client.aclose(close_connection_pool=True)

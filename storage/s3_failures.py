"""Turn boto3 and pyarrow failures into westflow's typed storage errors.

boto3 raises ``ClientError`` with an error code, or botocore connection errors;
pyarrow raises ``OSError`` whose text carries the AWS error name. Both become
one of :class:`EndpointUnreachable`, :class:`BucketMissing`,
:class:`AccessDenied`, :class:`ObjectMissing` or plain :class:`StorageError`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from westflow.errors import (
    AccessDenied,
    BucketMissing,
    EndpointUnreachable,
    ObjectMissing,
    StorageError,
)

__all__ = ["translate", "s3_errors"]

_DENIED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403",
           "InvalidToken", "ExpiredToken", "AuthorizationHeaderMalformed"}
_NO_KEY = {"NoSuchKey", "NoSuchUpload", "404", "NotFound"}
# Fragments of pyarrow's S3 error text (Arrow names the AWS error in capitals).
_ARROW_UNREACHABLE = ("NETWORK_CONNECTION", "Couldn't connect", "Connection refused",
                      "Timeout was reached", "REQUEST_TIMEOUT", "curlCode: 7", "curlCode: 28",
                      "SLOW_DOWN", "SERVICE_UNAVAILABLE")
_ARROW_DENIED = ("ACCESS_DENIED", "INVALID_ACCESS_KEY_ID", "SIGNATURE_DOES_NOT_MATCH",
                 "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                 "HTTP response code: 403")
_ARROW_NO_BUCKET = ("NO_SUCH_BUCKET", "NoSuchBucket", "Bucket does not exist")
_ARROW_NO_KEY = ("NO_SUCH_KEY", "NoSuchKey", "Path does not exist", "HTTP response code: 404")


def translate(exc: BaseException, *, endpoint: str, bucket: str = "", key: str = "",
              action: str = "S3 call") -> StorageError:
    """The typed westflow error for a boto3/botocore/pyarrow failure."""
    if isinstance(exc, StorageError):
        return exc
    where = {"endpoint": endpoint, "bucket": bucket, "key": key}
    from botocore import exceptions as bex

    if isinstance(exc, bex.ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        message = str(err.get("Message", "")) or code
        if code == "NoSuchBucket":
            return BucketMissing(f"{action} failed: bucket does not exist. To fix: create it "
                                 "(SeaweedServer.start() creates westflow-east/-west).", **where)
        if code in _DENIED:
            return AccessDenied(f"{action} failed: credentials refused ({code}). To fix: check "
                                "WESTFLOW_S3_ACCESS_KEY/WESTFLOW_S3_SECRET_KEY.", **where)
        if code in _NO_KEY:
            return ObjectMissing(f"{action} failed: no such object.", **where)
        if code in {"SlowDown", "ServiceUnavailable", "503", "500", "InternalError"}:
            return EndpointUnreachable(f"{action} failed: server unavailable ({message}).",
                                       **where)
        return StorageError(f"{action} failed: {code}: {message}", **where)
    if isinstance(exc, bex.BotoCoreError):
        # EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError, ConnectionClosedError...
        return EndpointUnreachable(f"{action} failed: endpoint did not answer "
                                   f"({type(exc).__name__}). To fix: start the S3 server "
                                   "(`westflow up`) or check WESTFLOW_S3_ENDPOINT.", **where)
    if isinstance(exc, FileNotFoundError):
        return ObjectMissing(f"{action} failed: no such object.", **where)
    if isinstance(exc, OSError):
        text = str(exc)
        if any(s in text for s in _ARROW_NO_BUCKET):
            return BucketMissing(f"{action} failed: bucket does not exist.", **where)
        if any(s in text for s in _ARROW_DENIED):
            return AccessDenied(f"{action} failed: credentials refused. To fix: check "
                                "WESTFLOW_S3_ACCESS_KEY/WESTFLOW_S3_SECRET_KEY.", **where)
        if any(s in text for s in _ARROW_NO_KEY):
            return ObjectMissing(f"{action} failed: no such object.", **where)
        if any(s in text for s in _ARROW_UNREACHABLE):
            return EndpointUnreachable(f"{action} failed: endpoint did not answer. To fix: start "
                                       "the S3 server or check WESTFLOW_S3_ENDPOINT.", **where)
        return StorageError(f"{action} failed: {_first_line(text)}", **where)
    raise exc


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0][:300] if text.strip() else "unknown error"


@contextmanager
def s3_errors(endpoint: str, bucket: str = "", key: str = "",
              action: str = "S3 call") -> Iterator[None]:
    """Re-raise any boto3/pyarrow failure inside the block as a typed StorageError."""
    from botocore import exceptions as bex

    try:
        yield
    except StorageError:
        raise
    except (bex.ClientError, bex.BotoCoreError, OSError) as exc:
        raise translate(exc, endpoint=endpoint, bucket=bucket, key=key, action=action) from exc

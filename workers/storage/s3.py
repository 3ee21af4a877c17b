"""s3://BUCKET/KEY: obstore for the data requests, boto3 for what obstore cannot do.

Endpoint and credentials come the standard boto3 way (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, profiles...),
read by boto3 and used by obstore for the data requests; boto3 lists, checks buckets and fetches the keys
object_store cannot name. Measured client CPU per GET: docs/S3-CLIENTS.md.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ConnectTimeoutError, EndpointConnectionError
from obstore.auth.boto3 import Boto3CredentialProvider
from obstore.store import S3Store

from facesweep.workers.errors import line_of
from facesweep.workers.storage.base import (
    CONNECT_TIMEOUT_S,
    READ_TIMEOUT_S,
    TIMEOUTS,
    ObjectError,
    ObjectInfo,
    ObjectStore,
    StorageError,
    count,
    probing,
)
from facesweep.workers.storage.pacing import RETRIES

PAGE = 1000
"""Keys per LIST page and per DeleteObjects request (S3's maximum for both)."""
OBJECT_CODES = (
    *("NoSuchKey", "404", "AccessDenied", "403"),
    *("InvalidRequest", "InvalidArgument", "KeyTooLongError", "InvalidObjectState"),  # e.g. in Glacier
)
"""S3 error codes about the one object asked for: its row is an error, the work goes on."""


class S3Storage(ObjectStore):
    """obstore (the Rust `object_store`) for the data requests: get, ranged get, head, put and delete,
    signed with boto3's credential chain (environment, profiles, SSO, instance metadata) through obstore's
    Boto3CredentialProvider, at the endpoint boto3 resolves (AWS_ENDPOINT_URL, a profile's settings) and
    the bucket's own region, so every request facesweep makes has one configuration. boto3 does what
    obstore cannot: the credentials check, one reachability probe, the bucket's region and existence,
    LIST (object_store fails a whole listing on one key it cannot name as a path: `a//b`, `.`, `..`,
    which S3 allows) and the GET of such a key."""

    SCHEME = "s3"
    CONTAINER = "bucket"
    CREDENTIALS = "AWS credentials"
    MISSING_CONTAINER = ("<Code>NoSuchBucket</Code>",)
    DELETE_BATCH = PAGE

    def __init__(self, max_connections: int = 32) -> None:
        super().__init__()
        self._max_connections = max_connections
        self._lock = threading.Lock()
        self._boto: tuple[boto3.session.Session, Any] | None = None
        self._stores: dict[str, S3Store] = {}

    @property
    def _client(self) -> Any:
        """boto3's S3 client, created once credentials and the endpoint are checked."""
        return self._session()[1]

    def _session(self) -> tuple[boto3.session.Session, Any]:
        with self._lock:
            if self._boto is None:
                session = boto3.session.Session()
                if session.get_credentials() is None:
                    raise StorageError(
                        "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or "
                        "AWS_PROFILE), and AWS_ENDPOINT_URL for an S3 store other than AWS"
                    )
                config = Config(
                    retries={"mode": "adaptive", "max_attempts": 10},
                    connect_timeout=CONNECT_TIMEOUT_S,
                    read_timeout=READ_TIMEOUT_S,
                )
                client = session.client("s3", config=config)
                if probing():
                    _check_reachable(session, client.meta.endpoint_url)
                self._boto = session, client
            return self._boto

    def _store(self, container: str) -> S3Store:
        session, client = self._session()
        with self._lock:
            if container not in self._stores:
                endpoint = client.meta.endpoint_url
                aws = urlsplit(endpoint).hostname.endswith(".amazonaws.com")
                options = {"region": _bucket_region(client, container)}
                if not aws:  # other stores: their URL, path-style addressing
                    options.update(endpoint=endpoint, virtual_hosted_style_request=False)
                self._stores[container] = S3Store(
                    container,
                    credential_provider=Boto3CredentialProvider(session),
                    client_options={
                        "allow_http": endpoint.startswith("http://"),
                        "pool_max_idle_per_host": str(self._max_connections),
                        **TIMEOUTS,
                    },
                    retry_config=RETRIES,
                    **options,
                )
            return self._stores[container]

    def list_objects(self, prefix: str) -> Iterator[ObjectInfo]:
        bucket, folder = self.folder(prefix)
        for page in self._pages(prefix, Bucket=bucket, Prefix=folder):
            yield from (self._listed(bucket, item) for item in page.get("Contents", ()))

    def list_level(self, prefix: str) -> tuple[list[ObjectInfo], list[str]]:
        bucket, folder = self.folder(prefix)
        objects, folders = [], []
        for page in self._pages(prefix, Bucket=bucket, Prefix=folder, Delimiter="/"):
            objects += [self._listed(bucket, item) for item in page.get("Contents", ())]
            folders += [self.uri(bucket, p["Prefix"]) for p in page.get("CommonPrefixes", ())]
        return objects, folders

    def _pages(self, prefix: str, **request: str) -> Iterator[dict]:
        """ListObjectsV2 pages, through boto3: object_store refuses a whole listing that holds one key
        it cannot name as a path (`a//b`, a `.` or `..` segment), which S3 allows."""
        pages = self._client.get_paginator("list_objects_v2").paginate(
            **request, PaginationConfig={"PageSize": PAGE}
        )
        try:
            for page in pages:
                count("LIST")
                yield page
        except ClientError as error:
            raise self._boto_error(prefix, error) from None
        except BotoCoreError as error:
            raise StorageError(self._describe(prefix, error)) from None

    def _listed(self, bucket: str, item: dict) -> ObjectInfo:
        return ObjectInfo(self.uri(bucket, item["Key"]), item.get("ETag"), item.get("Size"))

    def _unnamed(self, uri: str, kind: str, byte_range: tuple[int, int] | None, error: Exception) -> Any:
        """A GET or HEAD through boto3, for a key S3 allows and object_store cannot name (`a//b`, `./a`)."""
        if kind not in ("GET", "HEAD"):
            return super()._unnamed(uri, kind, byte_range, error)
        bucket, key = self.split(uri)
        try:
            if kind == "HEAD":
                found = self._client.head_object(Bucket=bucket, Key=key)
                return ObjectInfo(uri, found.get("ETag"), found.get("ContentLength"))
            ranged = {}
            if byte_range is not None:
                start, length = byte_range
                ranged["Range"] = f"bytes={start}-{start + length - 1}"
            return self._client.get_object(Bucket=bucket, Key=key, **ranged)["Body"].read()
        except (ClientError, BotoCoreError) as failure:
            raise self._boto_error(uri, failure) from None

    def make_folder(self, uri: str) -> None:
        bucket, _ = self.split(uri)
        count("HEAD")
        try:  # some servers create a bucket on the first PUT; AWS does not, so check explicitly
            self._client.head_bucket(Bucket=bucket)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchBucket", "NotFound"):
                raise StorageError(self.missing_container(uri)) from None
            raise self._boto_error(uri, error) from None
        except BotoCoreError as error:
            raise self._boto_error(uri, error) from None

    def _boto_error(self, uri: str, error: Exception) -> StorageError:
        """The one-line error for a boto3 failure: ObjectError when only this object is at fault."""
        code = error.response.get("Error", {}).get("Code", "") if isinstance(error, ClientError) else ""
        cls = ObjectError if code in OBJECT_CODES else StorageError
        return cls(self._describe(uri, error))

    def _describe(self, uri: str, error: Exception) -> str:
        if isinstance(error, ClientError):
            code = error.response.get("Error", {}).get("Code", "")
            if code == "NoSuchBucket":
                return self.missing_container(uri)
            if code in ("NoSuchKey", "404"):
                return f"{uri} does not exist"
            if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"):
                return f"access denied to {uri} ({code}): check AWS credentials and permissions"
            message = error.response.get("Error", {}).get("Message", "")
            return f"{uri}: {code or 'error'}: {message}".rstrip(": ")
        return f"{uri}: {line_of(error)}"


def _bucket_region(client: Any, bucket: str) -> str:
    """The bucket's own region as the store says it (`x-amz-bucket-region`, one HEAD per bucket and
    process; boto3 follows AWS's redirect there, obstore does not), else the configured one."""
    count("HEAD")
    try:
        headers = client.head_bucket(Bucket=bucket)["ResponseMetadata"]["HTTPHeaders"]
    except ClientError as error:  # a refusal (403, 404) still names the region
        headers = error.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    except BotoCoreError:
        headers = {}
    return headers.get("x-amz-bucket-region") or client.meta.region_name or "us-east-1"


def _check_reachable(session: boto3.session.Session, endpoint: str) -> None:
    """Fails in seconds, naming the endpoint, when nothing answers there (instead of ten retries)."""
    probe = session.client(
        "s3", config=Config(connect_timeout=5, retries={"mode": "standard", "total_max_attempts": 1})
    )
    count("LIST")
    try:
        probe.list_buckets()
    except ClientError:
        return  # an answer, even a refusal: the store is there
    except (EndpointConnectionError, ConnectTimeoutError) as error:
        where = os.environ.get("AWS_ENDPOINT_URL") or "unset, so AWS S3"
        raise StorageError(
            f"cannot reach the S3 endpoint {endpoint} ({type(error).__name__}): check AWS_ENDPOINT_URL "
            f"({where}) and the network"
        ) from None

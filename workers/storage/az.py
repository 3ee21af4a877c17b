"""az://CONTAINER/KEY: Azure Blob Storage through obstore's own AzureStore, for every request.

The account and its credentials are found as Azure's tools find them: AZURE_STORAGE_CONNECTION_STRING
(which Azure's CLI and SDKs read; obstore does not, so it is read here), else obstore's chain of
AZURE_STORAGE_ACCOUNT_NAME with AZURE_STORAGE_ACCOUNT_KEY, a SAS token (AZURE_STORAGE_SAS_TOKEN), a
service principal (AZURE_CLIENT_ID, AZURE_CLIENT_SECRET, AZURE_TENANT_ID), workload identity, the Azure
CLI's login (AZURE_USE_AZURE_CLI=true) or the machine's managed identity; AZURE_STORAGE_USE_EMULATOR=true
is Azurite's well-known account (at AZURITE_BLOB_STORAGE_URL, default http://127.0.0.1:10000).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import obstore
from obstore.store import AzureStore

from facesweep.workers.errors import line_of
from facesweep.workers.storage.base import TIMEOUTS, ObjectInfo, ObjectStore, StorageError, count, probing
from facesweep.workers.storage.pacing import RETRIES

PAGE = 5000
"""Results per List Blobs page (Azure's default and maximum; object_store asks for no other)."""
SETTINGS_HINT = (
    "set AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT_NAME with AZURE_STORAGE_ACCOUNT_KEY (or "
    "another Azure credential), or AZURE_STORAGE_USE_EMULATOR=true for Azurite"
)
_CONNECTION_KEYS = {
    "accountname": "account_name",
    "accountkey": "account_key",
    "sharedaccesssignature": "sas_key",
    "blobendpoint": "endpoint",
}
"""AzureStore's names for the connection string's settings (their names are case-insensitive)."""


class AzureStorage(ObjectStore):
    """obstore's AzureStore for every request, LIST included (object_store fails a whole listing on one
    blob name it cannot name as a path, `a//b`, `.`, `..`; facesweep writes none). The first request of
    a process is a HEAD with no retries, so an endpoint where nothing answers fails in seconds."""

    SCHEME = "az"
    CONTAINER = "container"
    CREDENTIALS = "Azure credentials"
    MISSING_CONTAINER = ("<Code>ContainerNotFound</Code>", "The specified container does not exist")
    DELETE_BATCH = 256
    """Blobs per Blob Batch request (Azure's maximum)."""

    def __init__(self, max_connections: int = 32) -> None:
        super().__init__()
        self._max_connections = max_connections
        self._lock = threading.Lock()
        self._stores: dict[str, AzureStore] = {}
        self._reachable = False

    def _store(self, container: str) -> AzureStore:
        with self._lock:
            if container not in self._stores:
                store = self._connect(container, RETRIES)
                if not self._reachable and probing():
                    self._check_reachable(container)
                    self._reachable = True
                self._stores[container] = store
            return self._stores[container]

    def _connect(self, container: str, retries: dict, **client: Any) -> AzureStore:
        settings = _connection_settings()
        endpoint = (
            settings.get("endpoint")
            or os.environ.get("AZURE_STORAGE_ENDPOINT")
            or os.environ.get("AZURE_ENDPOINT")
        )
        options = {"pool_max_idle_per_host": str(self._max_connections), **TIMEOUTS, **client}
        if endpoint and endpoint.startswith("http://"):
            options["allow_http"] = True
        try:
            return AzureStore(container, client_options=options, retry_config=retries, **settings)
        except Exception as error:  # no account, a setting obstore refuses
            raise StorageError(f"cannot use Azure Blob Storage ({line_of(error)}): {SETTINGS_HINT}") from None

    def _check_reachable(self, container: str) -> None:
        """Fails in seconds, naming the URL, when nothing answers at the account's endpoint (instead of
        retrying for minutes); any answer, even a refusal, will do."""
        probe = self._connect(container, {"max_retries": 0}, connect_timeout=timedelta(seconds=5))
        count("HEAD")
        try:
            obstore.head(probe, "facesweep-reachability-probe")
        except Exception as error:
            if "error sending request" in str(error):
                raise StorageError(
                    f"cannot reach Azure Blob Storage ({line_of(error)}): check the account's endpoint "
                    "(AZURE_STORAGE_CONNECTION_STRING, AZURE_STORAGE_ENDPOINT) and the network"
                ) from None

    def list_objects(self, prefix: str) -> Iterator[ObjectInfo]:
        container, folder = self.folder(prefix)
        listed = 0
        try:
            for chunk in obstore.list(self._store(container), folder or None, chunk_size=PAGE):
                for meta in chunk:
                    if listed % PAGE == 0:
                        count("LIST")
                    listed += 1
                    yield self.info(container, meta)
        except Exception as error:
            raise self.error(prefix, error) from None
        if not listed:
            count("LIST")

    def list_level(self, prefix: str) -> tuple[list[ObjectInfo], list[str]]:
        container, folder = self.folder(prefix)
        try:
            found = obstore.list_with_delimiter(self._store(container), folder or None)
        except Exception as error:
            raise self.error(prefix, error) from None
        objects = [self.info(container, meta) for meta in found["objects"]]
        folders = [self.uri(container, f"{name}/") for name in found["common_prefixes"]]
        count("LIST", max(1, -(-(len(objects) + len(folders)) // PAGE)))
        return objects, folders

    def make_folder(self, uri: str) -> None:
        """One LIST of the folder's first page: obstore has no request about a container, and a blob's
        HEAD answers 404 alike for a missing blob and a missing container."""
        container, folder = self.folder(uri)
        count("LIST")
        try:
            next(iter(obstore.list(self._store(container), folder or None, chunk_size=1)), None)
        except Exception as error:
            raise self.error(uri, error) from None

    def version(self, etag: str | None) -> str | None:
        """Without quotes, as List Blobs gives it (a HEAD's ETag header has them)."""
        return etag.strip('"') if etag else etag


def _connection_settings() -> dict[str, Any]:
    """AzureStore settings from AZURE_STORAGE_CONNECTION_STRING (`AccountName=...;AccountKey=...;
    BlobEndpoint=...`, or `UseDevelopmentStorage=true` for Azurite); none when it is unset, so obstore
    reads its own variables."""
    text = os.environ.get("AZURE_STORAGE_CONNECTION_STRING", "")
    if not text:
        return {}
    parts = {
        name.strip().lower(): value.strip() for name, _, value in (p.partition("=") for p in text.split(";"))
    }
    if parts.get("usedevelopmentstorage", "").lower() == "true":
        return {"use_emulator": True}
    settings = {
        _CONNECTION_KEYS[name]: value for name, value in parts.items() if name in _CONNECTION_KEYS and value
    }
    if "endpoint" not in settings and "account_name" in settings and "endpointsuffix" in parts:
        protocol = parts.get("defaultendpointsprotocol") or "https"
        settings["endpoint"] = f"{protocol}://{settings['account_name']}.blob.{parts['endpointsuffix']}"
    return {"use_emulator": False, **settings}  # the connection string wins, as with Azure's tools

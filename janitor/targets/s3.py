"""s3:// archive target (AWS S3, MinIO and other S3-compatibles) on botocore and boto3.

botocore is imported on first use, never at module import: `janitor guard` imports
janitor.targets and must start fast. boto3 (for its managed multipart transfer) is
imported only when a file is large enough to need it. Credentials come only from the
standard AWS chain (env, profile, SSO, instance role); nothing here reads or stores secrets.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import os
import socket
import sys
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from janitor.errors import DiskFull, TargetError, UploadFailed, VerifyFailed
from janitor.targets.base import (
    META_MODE,
    META_MTIME,
    META_SHA256,
    Progress,
    StoredObject,
    TargetSpec,
    join_key,
    join_prefix,
    validate_lifecycle_args,
)

_CHUNK = 1 << 20

_ACCESS_CODES = {
    "AccessDenied": "access denied (check credentials and bucket policy)",
    "403": "access denied (check credentials and bucket policy)",
    "Forbidden": "access denied (check credentials and bucket policy)",
    "AllAccessDisabled": "access denied: all access to this bucket is disabled",
    "InvalidAccessKeyId": "access denied: access key not recognised (check credentials)",
    "SignatureDoesNotMatch": "access denied: signature rejected (check the secret key)",
    "InvalidToken": "access denied: session token invalid (check credentials)",
    "ExpiredToken": "access denied: credentials expired (refresh them)",
    "TokenRefreshRequired": "access denied: credentials expired (refresh them)",
}
_THROTTLE_CODES = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "TooManyRequests",
    "TooManyRequestsException",
    "RequestThrottled",
    "ServiceUnavailable",
    "503",
}
_SERVER_CODES = {"InternalError", "500", "502", "504", "BadGateway", "GatewayTimeout"}
_REDIRECT_CODES = {"301", "PermanentRedirect", "AuthorizationHeaderMalformed"}
# Answers from S3-compatibles that do not understand flexible checksums
# (x-amz-checksum-* headers / aws-chunked trailers). BadDigest is deliberately absent:
# it means the data really was damaged in transit.
_CHECKSUM_UNSUPPORTED_CODES = {
    "NotImplemented",
    "InvalidArgument",
    "InvalidRequest",
    "XAmzContentSHA256Mismatch",
    "MissingContentLength",
    "501",
}


def _b64_of_hex(hex_digest: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_digest)).decode("ascii")


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _parse_mode(value: str | None) -> int | None:
    if not value:
        return None
    try:
        return int(value, 8)  # accepts "0o644" and "644"
    except ValueError:
        return None


def _parse_float(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None


def _boto3_errors(name: str) -> tuple[type[BaseException], ...]:
    """boto3's exception class `name`, if boto3 has been imported (only multipart uploads
    import it); otherwise nothing could have raised one."""
    module = sys.modules.get("boto3.exceptions")
    return (getattr(module, name),) if module is not None else ()


def _os_error_in(exc: BaseException) -> OSError | None:
    """Find the socket-level OSError (with errno) behind a botocore/urllib3 exception."""
    seen: set[int] = set()
    stack: list[BaseException] = [exc]
    while stack:
        e = stack.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno:
            return e
        kw = getattr(e, "kwargs", None)
        if isinstance(kw, dict) and isinstance(kw.get("error"), BaseException):
            stack.append(kw["error"])
        for attr in ("__cause__", "__context__", "reason"):
            inner = getattr(e, attr, None)
            if isinstance(inner, BaseException):
                stack.append(inner)
        stack.extend(a for a in getattr(e, "args", ()) if isinstance(a, BaseException))
    return None


class S3Target:
    """Archive to s3://bucket/prefix (one PutObject, or boto3's managed multipart transfer),
    verifying each copy."""

    def __init__(self, spec: TargetSpec, *, transfer_overrides: dict[str, Any] | None = None):
        parts = urlsplit(spec.url)
        if parts.scheme.lower() != "s3":
            raise ValueError(f"target {spec.name}: {spec.url!r} is not an s3:// URL")
        if not parts.netloc:
            raise ValueError(
                f"target {spec.name}: {spec.url!r} names no bucket (s3://bucket/prefix)"
            )
        if parts.query or parts.fragment:
            raise ValueError(f"target {spec.name}: {spec.url!r} must not have ?query or #fragment")
        if spec.max_attempts < 1:
            raise ValueError(f"target {spec.name}: max_attempts must be at least 1")
        self.spec = spec
        self.bucket = parts.netloc
        self.prefix = parts.path.strip("/")
        self._transfer_overrides = dict(transfer_overrides or {})
        self._lock = threading.Lock()
        self._client_obj: Any = None
        self._compat_client_obj: Any = None
        # Flips to False once the endpoint has rejected flexible checksums; later uploads
        # skip straight to the compatible path.
        self._checksums_supported = True
        self._bucket_confirmed = False

    # -- naming ---------------------------------------------------------------------------

    def key_for(self, policy: str, relpath: str) -> str:
        return join_key(self.prefix, policy, relpath)

    def policy_prefix(self, policy: str) -> str:
        return join_prefix(self.prefix, policy)

    def describe(self) -> str:
        where = f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"
        return f"{where} (endpoint {self._endpoint()})"

    def _endpoint(self) -> str:
        if self.spec.endpoint_url:
            return self.spec.endpoint_url
        if self._client_obj is not None:
            return str(self._client_obj.meta.endpoint_url)
        return "AWS default"

    def _fail(self, message: str) -> str:
        return f"target {self.spec.name}: {message}"

    # -- client ---------------------------------------------------------------------------

    def _make_client(self, *, compat: bool) -> Any:
        import botocore.session  # lazy: see module docstring; boto3 only for multipart
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ProfileNotFound

        s3_opts: dict[str, Any] = {}
        if self.spec.addressing_style:
            s3_opts["addressing_style"] = self.spec.addressing_style
        extra: dict[str, Any] = {}
        if not compat:
            # Every upload request of this client carries a SHA-256 checksum header, which is
            # signed and which the server checks the body against; signing the payload too
            # (botocore always does on http:// endpoints) would hash every byte a second time.
            s3_opts["payload_signing_enabled"] = False
        if compat:
            # Only send checksums the API strictly requires: no x-amz-checksum-* headers
            # and no aws-chunked trailers, which older S3-compatibles reject.
            extra = {
                "request_checksum_calculation": "when_required",
                "response_checksum_validation": "when_required",
            }
        config = Config(
            # botocore's Config "max_attempts" counts retries only (N+1 requests); the
            # spec means total requests, like max_attempts in ~/.aws/config.
            retries={"total_max_attempts": self.spec.max_attempts, "mode": "standard"},
            connect_timeout=self.spec.connect_timeout,
            read_timeout=self.spec.read_timeout,
            s3=s3_opts or None,
            **extra,
        )
        try:
            session = botocore.session.Session(profile=self.spec.profile)
            return session.create_client(
                "s3",
                endpoint_url=self.spec.endpoint_url,
                region_name=self.spec.region,
                config=config,
            )
        except ProfileNotFound:
            raise TargetError(self._fail(f"AWS profile '{self.spec.profile}' not found")) from None
        except (BotoCoreError, ValueError) as e:
            raise TargetError(self._fail(f"cannot create S3 client: {_one_line(e)}")) from None

    @property
    def client(self) -> Any:
        """The botocore S3 client, created (and botocore imported) on first use."""
        with self._lock:
            if self._client_obj is None:
                self._client_obj = self._make_client(compat=False)
            return self._client_obj

    def _compat_client(self) -> Any:
        with self._lock:
            if self._compat_client_obj is None:
                self._compat_client_obj = self._make_client(compat=True)
            return self._compat_client_obj

    def _active_client(self) -> Any:
        return self.client if self._checksums_supported else self._compat_client()

    # -- error mapping --------------------------------------------------------------------

    def _error(
        self, exc: BaseException, *, action: str, key: str | None = None, cls: type = TargetError
    ) -> TargetError:
        """One clear line for a boto3/botocore failure; the caller raises it `from None`."""
        from botocore import exceptions as bx

        # upload_file wraps ClientError in S3UploadFailedError, keeping the original as context.
        if isinstance(exc, _boto3_errors("S3UploadFailedError")):
            inner = exc.__cause__ or exc.__context__
            if isinstance(inner, bx.ClientError | bx.BotoCoreError):
                exc = inner
        endpoint = self._endpoint()
        attempts = self.spec.max_attempts
        if isinstance(exc, bx.ClientError):
            err = exc.response.get("Error", {})
            code = str(
                err.get("Code")
                or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "unknown")
            )
            msg = _one_line(err.get("Message") or "")
            if code == "NoSuchBucket":
                return cls(self._fail(f"bucket '{self.bucket}' does not exist"))
            if code in ("NoSuchKey", "404") and key is not None:
                return cls(self._fail(f"object '{key}' does not exist"))
            if code in _ACCESS_CODES:
                return cls(self._fail(_ACCESS_CODES[code]))
            if code in _THROTTLE_CODES:
                return cls(
                    self._fail(
                        f"endpoint is throttling requests ({code}) after {attempts} attempts; "
                        "try again later"
                    )
                )
            if code in _SERVER_CODES:
                return cls(self._fail(f"endpoint server error ({code}) after {attempts} attempts"))
            if code in _REDIRECT_CODES:
                region = (
                    exc.response.get("ResponseMetadata", {})
                    .get("HTTPHeaders", {})
                    .get("x-amz-bucket-region")
                )
                hint = f"set region: {region}" if region else "check the target's region"
                return cls(self._fail(f"bucket '{self.bucket}' is in another region ({hint})"))
            if code == "InvalidStorageClass":
                return cls(
                    self._fail(
                        f"storage class '{self.spec.storage_class}' rejected by the endpoint"
                    )
                )
            if code.startswith("KMS.") or "kms" in msg.lower():
                return cls(self._fail(f"server-side encryption with KMS failed: {msg or code}"))
            if code == "BadDigest":
                # The server's verification failed: a file's own problem (like VerifyFailed
                # from our comparisons), not a sign that the target is down.
                return VerifyFailed(
                    self._fail(
                        f"{action}: the server's SHA-256 of the bytes it received is not "
                        "janitor's digest (file changed while read, or damaged in transit)"
                    )
                )
            detail = f"{code}: {msg}" if msg else code
            return cls(self._fail(f"{action} failed ({detail})"))
        if isinstance(exc, bx.FlexibleChecksumError):
            # botocore checked the response body against the server's checksum and it differs.
            where = f"'{key}'" if key else "response"
            return VerifyFailed(self._fail(f"{where} failed its checksum during {action}"))
        if isinstance(exc, bx.NoCredentialsError | bx.PartialCredentialsError):
            return cls(
                self._fail(
                    "no usable credentials (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                    "a profile, or an instance role)"
                )
            )
        if isinstance(exc, bx.ProfileNotFound):
            return cls(self._fail(f"AWS profile '{self.spec.profile}' not found"))
        if isinstance(exc, bx.ConnectTimeoutError):
            return cls(
                self._fail(
                    f"cannot reach {endpoint} (connect timed out after "
                    f"{self.spec.connect_timeout:g}s, {attempts} attempts)"
                )
            )
        if isinstance(exc, bx.SSLError):
            return cls(self._fail(f"TLS error talking to {endpoint}: {_one_line(exc)}"))
        if isinstance(exc, bx.ReadTimeoutError):
            return cls(
                self._fail(
                    f"{endpoint} stopped responding (read timed out after "
                    f"{self.spec.read_timeout:g}s, {attempts} attempts)"
                )
            )
        if isinstance(exc, bx.EndpointConnectionError):
            os_err = _os_error_in(exc)
            if isinstance(os_err, socket.gaierror) or "gaierror" in repr(exc):
                reason = "host name not resolved"
            elif os_err is not None and os_err.errno is not None:
                reason = os.strerror(os_err.errno).lower()
            else:
                reason = "connection failed"
            return cls(self._fail(f"cannot reach {endpoint} ({reason})"))
        if isinstance(
            exc,
            bx.ConnectionClosedError
            | bx.ResponseStreamingError
            | bx.IncompleteReadError
            | bx.HTTPClientError,
        ):
            return cls(self._fail(f"connection to {endpoint} dropped during {action}"))
        if isinstance(exc, bx.BotoCoreError):
            return cls(self._fail(f"{action} failed: {_one_line(exc)}"))
        return cls(self._fail(f"{action} failed: {type(exc).__name__}: {_one_line(exc)}"))

    def _is_client_error(self, exc: BaseException, codes: set[str]) -> bool:
        from botocore.exceptions import ClientError

        if isinstance(exc, _boto3_errors("S3UploadFailedError")):
            exc = exc.__cause__ or exc.__context__ or exc
        if not isinstance(exc, ClientError):
            return False
        return str(exc.response.get("Error", {}).get("Code")) in codes

    @staticmethod
    def _sdk_errors() -> tuple[type[BaseException], ...]:
        from botocore.exceptions import BotoCoreError, ClientError

        return (ClientError, BotoCoreError, *_boto3_errors("Boto3Error"))

    # -- reading --------------------------------------------------------------------------

    def _head(self, key: str) -> dict | None:
        """HEAD the object; None when absent. Raises botocore exceptions otherwise."""
        from botocore.exceptions import ClientError

        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if self._checksums_supported:
            kwargs["ChecksumMode"] = "ENABLED"
        try:
            return self._active_client().head_object(**kwargs)
        except ClientError as e:
            code = str(e.response.get("Error", {}).get("Code"))
            if code not in ("404", "NoSuchKey", "NotFound"):
                raise
        # HEAD has no body, so a missing bucket looks like a missing key. Tell them apart
        # once, or "absent" would send callers into uploads that cannot succeed.
        if not self._bucket_confirmed:
            try:
                self._active_client().head_bucket(Bucket=self.bucket)
            except ClientError as e:
                if str(e.response.get("Error", {}).get("Code")) in ("404", "NotFound"):
                    raise TargetError(
                        self._fail(f"bucket '{self.bucket}' does not exist")
                    ) from None
                raise
            self._bucket_confirmed = True
        return None

    def _stored(self, key: str, head: dict) -> StoredObject:
        meta = {k.lower(): v for k, v in (head.get("Metadata") or {}).items()}
        sha = meta.get(META_SHA256)
        return StoredObject(
            key=key,
            size=int(head.get("ContentLength", 0)),
            sha256=sha.lower() if sha else None,
            mtime=_parse_float(meta.get(META_MTIME)),
            mode=_parse_mode(meta.get(META_MODE)),
            version_id=head.get("VersionId"),
        )

    def stat(self, key: str) -> StoredObject | None:
        try:
            head = self._head(key)
        except self._sdk_errors() as e:
            raise self._error(e, action="stat") from None
        return None if head is None else self._stored(key, head)

    def download(
        self, key: str, dest_path: str, *, progress: Progress | None = None
    ) -> StoredObject:
        """Stream the object to dest_path while hashing; VerifyFailed (and no file) on mismatch."""
        ok = False
        try:
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
            if self._checksums_supported:
                kwargs["ChecksumMode"] = "ENABLED"
            resp = self._active_client().get_object(**kwargs)
            obj = self._stored(key, resp)
            h = hashlib.sha256()
            got = 0
            body = resp["Body"]
            try:
                with open(dest_path, "wb") as out:
                    for block in body.iter_chunks(_CHUNK):
                        out.write(block)
                        h.update(block)
                        got += len(block)
                        if progress is not None:
                            progress(len(block))
                    out.flush()
                    os.fsync(out.fileno())
            finally:
                body.close()
            if obj.sha256 is None:
                raise VerifyFailed(
                    self._fail(f"'{key}' has no {META_SHA256} metadata; cannot verify it")
                )
            if got != obj.size or h.hexdigest() != obj.sha256:
                raise VerifyFailed(
                    self._fail(
                        f"'{key}' did not verify: read {got} bytes sha256 {h.hexdigest()[:16]}, "
                        f"stored {obj.size} bytes sha256 {obj.sha256[:16]}"
                    )
                )
            ok = True
            return obj
        except TargetError:
            raise
        except self._sdk_errors() as e:  # before OSError: botocore timeouts subclass it
            raise self._error(e, action="download", key=key) from None
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise DiskFull(f"no space left writing {dest_path}") from None
            raise TargetError(self._fail(f"cannot write {dest_path}: {e.strerror or e}")) from None
        finally:
            if not ok:
                # Never leave partial or corrupt bytes where a restore might pick them up.
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(dest_path)

    def list_objects(self, prefix: str = "") -> Iterator[StoredObject]:
        """Objects under prefix (a full key prefix). One HEAD per object: for tests/reports."""
        try:
            pages = (
                self._active_client()
                .get_paginator("list_objects_v2")
                .paginate(Bucket=self.bucket, Prefix=prefix)
            )
            for page in pages:
                for item in page.get("Contents", []):
                    head = self._head(item["Key"])
                    if head is not None:
                        yield self._stored(item["Key"], head)
        except self._sdk_errors() as e:
            raise self._error(e, action="list") from None

    def list_sizes(self, prefix: str, *, max_keys: int = 5000) -> dict[str, int] | None:
        """Sizes of the objects directly under `prefix` (one "directory"), by key, without a
        HEAD per object: lets callers skip the HEAD for keys that are plainly absent.

        None when there are more than max_keys (then HEAD each key instead).
        """
        out: dict[str, int] = {}
        try:
            pages = (
                self._active_client()
                .get_paginator("list_objects_v2")
                .paginate(Bucket=self.bucket, Prefix=prefix, Delimiter="/")
            )
            for page in pages:
                for item in page.get("Contents", []):
                    out[item["Key"]] = int(item["Size"])
                if len(out) > max_keys:
                    return None
        except self._sdk_errors() as e:
            raise self._error(e, action="list") from None
        return out

    def check(self) -> None:
        try:
            self._active_client().head_bucket(Bucket=self.bucket)
        except self._sdk_errors() as e:
            from botocore.exceptions import ClientError

            if isinstance(e, ClientError) and str(e.response.get("Error", {}).get("Code")) in (
                "404",
                "NotFound",
            ):
                raise TargetError(self._fail(f"bucket '{self.bucket}' does not exist")) from None
            raise self._error(e, action="check") from None
        self._bucket_confirmed = True

    # -- writing --------------------------------------------------------------------------

    def _transfer_options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {
            "multipart_threshold": self.spec.multipart_threshold,
            "multipart_chunksize": self.spec.multipart_chunksize,
        }
        opts.update(self._transfer_overrides)
        return opts

    def _extra_args(
        self, *, sha256: str, mtime: float, mode: int, checksum: bool, whole_object: bool = False
    ) -> dict:
        extra: dict[str, Any] = {
            "Metadata": {
                META_SHA256: sha256,
                META_MTIME: repr(float(mtime)),  # repr round-trips the float exactly
                META_MODE: oct(mode & 0o7777),
            }
        }
        if self.spec.storage_class:
            extra["StorageClass"] = self.spec.storage_class
        if self.spec.sse:
            extra["ServerSideEncryption"] = self.spec.sse
        if checksum:
            # The server recomputes SHA-256 of each request body and rejects a mismatch.
            extra["ChecksumAlgorithm"] = "SHA256"
            if whole_object:
                # One PutObject: send the digest we already have. botocore would otherwise
                # read and hash the whole file a second time to compute the same header.
                extra["ChecksumSHA256"] = _b64_of_hex(sha256)
        return extra

    def upload(
        self,
        local_path: str,
        key: str,
        *,
        sha256: str,
        size: int,
        mtime: float,
        mode: int,
        progress: Progress | None = None,
    ) -> StoredObject:
        """Upload (multipart from multipart_threshold up) and verify; returns the verified copy.

        progress gets byte increments; s3transfer may report negative amounts when it retries.
        """
        sha256 = sha256.lower()
        use_checksum = self._checksums_supported
        try:
            try:
                put = self._upload_once(
                    local_path,
                    key,
                    sha256=sha256,
                    size=size,
                    mtime=mtime,
                    mode=mode,
                    progress=progress,
                    checksum=use_checksum,
                )
            except self._sdk_errors() as e:
                if not (use_checksum and self._is_client_error(e, _CHECKSUM_UNSUPPORTED_CODES)):
                    raise
                # Some S3-compatibles reject flexible checksums: retry once without them
                # and rely on HEAD + size + stored digest instead.
                self._checksums_supported = False
                use_checksum = False
                put = self._upload_once(
                    local_path,
                    key,
                    sha256=sha256,
                    size=size,
                    mtime=mtime,
                    mode=mode,
                    progress=progress,
                    checksum=False,
                )
            if put is not None and use_checksum and put.get("ChecksumSHA256"):
                # A single PUT carried our digest as its checksum header; S3 and MinIO hash
                # the bytes they received and refuse a mismatch (BadDigest). A 200 answer
                # whose checksum is our digest is the verification: no HEAD needed.
                if put["ChecksumSHA256"] != _b64_of_hex(sha256):
                    raise VerifyFailed(
                        self._fail(
                            f"'{key}' server checksum differs from our digest "
                            "(file changed during upload?)"
                        )
                    )
                return StoredObject(key, size, sha256, float(mtime), mode & 0o7777, put.get("VersionId"))
            head = self._head(key)
        except self._sdk_errors() as e:  # before OSError: botocore timeouts subclass it
            raise self._error(e, action="upload", cls=UploadFailed) from None
        except OSError as e:
            raise UploadFailed(
                self._fail(f"cannot read {local_path}: {e.strerror or _one_line(e)}")
            ) from None
        if head is None:
            raise VerifyFailed(self._fail(f"'{key}' is missing right after upload"))
        return self._verify_head(key, head, sha256=sha256, size=size)

    def _upload_once(
        self,
        local_path: str,
        key: str,
        *,
        sha256: str,
        size: int,
        mtime: float,
        mode: int,
        progress: Progress | None,
        checksum: bool,
    ) -> dict | None:
        """Upload; returns the PutObject response for single-part uploads, else None."""
        client = self.client if checksum else self._compat_client()
        options = self._transfer_options()
        if size < options["multipart_threshold"]:
            # What the managed transfer does below its threshold (one PutObject), without
            # building a transfer manager and its thread pool for every small file.
            extra = self._extra_args(
                sha256=sha256, mtime=mtime, mode=mode, checksum=checksum, whole_object=True
            )
            with open(local_path, "rb") as body:
                resp = client.put_object(Bucket=self.bucket, Key=key, Body=body, **extra)
            if progress is not None:
                progress(size)
            return dict(resp)
        # boto3's managed transfer (s3transfer) only here: importing it costs ~40 ms that
        # the single PutObject above does not need.
        from boto3.s3.transfer import S3Transfer, TransferConfig

        with S3Transfer(client, TransferConfig(**options)) as transfer:
            transfer.upload_file(
                local_path,
                self.bucket,
                key,
                extra_args=self._extra_args(sha256=sha256, mtime=mtime, mode=mode, checksum=checksum),
                callback=progress,
            )
        return None

    def _verify_head(self, key: str, head: dict, *, sha256: str, size: int) -> StoredObject:
        obj = self._stored(key, head)
        if obj.size != size:
            raise VerifyFailed(self._fail(f"'{key}' stored with {obj.size} bytes, expected {size}"))
        if obj.sha256 != sha256:
            raise VerifyFailed(self._fail(f"'{key}' stored digest metadata does not match ours"))
        # A server-computed SHA-256 of the whole object is the strongest evidence we get;
        # multipart uploads only carry a checksum-of-part-checksums, which we cannot compare.
        server = head.get("ChecksumSHA256")
        ctype = head.get("ChecksumType")
        multipart = "-" in str(head.get("ETag", "")) or (server is not None and "-" in server)
        if server and ctype != "COMPOSITE" and not multipart and server != _b64_of_hex(sha256):
            raise VerifyFailed(
                self._fail(
                    f"'{key}' server checksum differs from our digest (file changed during upload?)"
                )
            )
        return obj

    # -- lifecycle ------------------------------------------------------------------------

    def get_lifecycle(self) -> list[dict]:
        from botocore.exceptions import ClientError

        try:
            resp = self._active_client().get_bucket_lifecycle_configuration(Bucket=self.bucket)
        except ClientError as e:
            if str(e.response.get("Error", {}).get("Code")) == "NoSuchLifecycleConfiguration":
                return []
            raise self._error(e, action="get lifecycle") from None
        except self._sdk_errors() as e:
            raise self._error(e, action="get lifecycle") from None
        return list(resp.get("Rules", []))

    def set_lifecycle(
        self,
        prefix_rule_id: str,
        prefix: str,
        expire_after_days: int,
        transition_after_days: int | None,
        storage_class: str | None,
        *,
        abort_incomplete_after_days: int | None = 7,
    ) -> None:
        """Install/replace the rule with this ID, keeping every other rule on the bucket.

        The rule also aborts multipart uploads left incomplete (an endpoint that died
        mid-upload leaves billable parts behind). Read-modify-write: two janitors editing
        the same bucket at once can lose a rule.
        """
        validate_lifecycle_args(
            prefix_rule_id, expire_after_days, transition_after_days, storage_class
        )
        rule: dict[str, Any] = {
            "ID": prefix_rule_id,
            "Filter": {"Prefix": prefix},
            "Status": "Enabled",
            "Expiration": {"Days": expire_after_days},
        }
        if abort_incomplete_after_days is not None:
            rule["AbortIncompleteMultipartUpload"] = {
                "DaysAfterInitiation": abort_incomplete_after_days
            }
        if transition_after_days is not None:
            rule["Transitions"] = [{"Days": transition_after_days, "StorageClass": storage_class}]
        rules = [r for r in self.get_lifecycle() if r.get("ID") != prefix_rule_id]
        rules.append(rule)
        try:
            self._active_client().put_bucket_lifecycle_configuration(
                Bucket=self.bucket, LifecycleConfiguration={"Rules": rules}
            )
        except self._sdk_errors() as e:
            raise self._error(e, action="set lifecycle") from None

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
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from janitor.errors import DiskFull, FileChanged, TargetError, UploadFailed, VerifyFailed
from janitor.targets.base import (
    MAX_DIRS_META,
    META_DIRS,
    META_MODE,
    META_MTIME,
    META_SHA256,
    BoundedFdReader,
    KeyRejected,
    Progress,
    StoredObject,
    TargetSpec,
    join_key,
    join_prefix,
    limiter_for,
    md5_of_fd,
    open_dest,
    open_source,
    pread_exact,
    validate_lifecycle_args,
    write_all,
)

_CHUNK = 1 << 20
# multipart parts of one file in flight (and in memory) at once
_PART_WINDOW = 4

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


@dataclass
class _Put:
    """What an upload request answered: the version, the ETag, and whether it proves the bytes."""

    version_id: str | None
    etag: str | None
    proven: bool


def _version(resp: Any) -> str | None:
    """The version id an upload created; None on an unversioned bucket (some servers say "null")."""
    value = resp.get("VersionId")
    return None if value in (None, "", "null") else str(value)


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
        self._limiter = limiter_for(spec)

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
        self, exc: BaseException, *, action: str, key: str | None = None, cls: type[TargetError] = TargetError
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
            if code in ("KeyTooLongError", "InvalidObjectName"):
                return KeyRejected(self._fail(f"{action}: the endpoint refuses this key ({code})"))
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
            if code in ("BadDigest", "InvalidDigest"):
                # The server's verification failed: a file's own problem (like VerifyFailed
                # from our comparisons), not a sign that the target is down.
                return VerifyFailed(
                    self._fail(
                        f"{action}: the server's SHA-256/MD5 of the bytes it received is not "
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

    def _head(self, key: str) -> dict[str, Any] | None:
        """HEAD the object; None when absent. Raises botocore exceptions otherwise."""
        from botocore.exceptions import ClientError

        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if self._checksums_supported:
            kwargs["ChecksumMode"] = "ENABLED"
        try:
            head: dict[str, Any] = self._active_client().head_object(**kwargs)
            return head
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

    def _stored(self, key: str, head: dict[str, Any]) -> StoredObject:
        meta = {k.lower(): v for k, v in (head.get("Metadata") or {}).items()}
        sha = meta.get(META_SHA256)
        return StoredObject(
            key=key,
            size=int(head.get("ContentLength", 0)),
            sha256=sha.lower() if sha else None,
            mtime=_parse_float(meta.get(META_MTIME)),
            mode=_parse_mode(meta.get(META_MODE)),
            version_id=_version(head),
            etag=str(head.get("ETag") or "").strip('"').lower() or None,
            dirs=meta.get(META_DIRS),
        )

    def stat(self, key: str) -> StoredObject | None:
        try:
            head = self._head(key)
        except self._sdk_errors() as e:
            raise self._error(e, action="stat") from None
        return None if head is None else self._stored(key, head)

    def download(
        self, key: str, dest: str | int, *, progress: Progress | None = None, version_id: str | None = None
    ) -> StoredObject:
        """Stream the object into `dest` (a descriptor, or a path created 0600) while hashing;
        VerifyFailed on a mismatch (a path given is then removed; a descriptor is the caller's)."""
        ok = False
        out_fd = dest if isinstance(dest, int) else -1
        shown = dest if isinstance(dest, str) else "the restore copy"
        try:
            if out_fd < 0:
                out_fd = open_dest(str(dest))
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
            if version_id:
                kwargs["VersionId"] = version_id
            resp = self._active_client().get_object(**kwargs)
            obj = self._stored(key, resp)
            if obj.sha256 is None:
                raise VerifyFailed(
                    self._fail(f"'{key}' has no {META_SHA256} metadata; cannot verify it")
                )
            got, digest = self._stream_body(resp["Body"], obj.size, out_fd, progress, key=key)
            os.fsync(out_fd)
            if got != obj.size or digest != obj.sha256:
                raise VerifyFailed(
                    self._fail(
                        f"'{key}' did not verify: read {got} bytes sha256 {digest[:16]}, "
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
                raise DiskFull(f"no space left writing {shown}") from None
            raise TargetError(self._fail(f"cannot write {shown}: {e.strerror or e}")) from None
        finally:
            if isinstance(dest, str) and out_fd >= 0:
                os.close(out_fd)
                if not ok:
                    # Never leave partial or corrupt bytes where a restore might pick them up.
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(dest)

    def _stream_body(self, body: Any, size: int, out_fd: int | None, progress: Progress | None, *,
                     key: str) -> tuple[int, str]:
        """Read a GET body (at most `size` + 1 bytes: more is already a mismatch), hashing it
        and writing it to out_fd when given; (bytes, sha256 hex)."""
        h = hashlib.sha256()
        got = 0
        try:
            for block in body.iter_chunks(_CHUNK):
                if self._limiter is not None:
                    self._limiter.consume(len(block))
                got += len(block)
                if got > size:
                    raise VerifyFailed(self._fail(f"'{key}' is longer than its recorded {size} bytes"))
                h.update(block)
                if out_fd is not None:
                    write_all(out_fd, block)
                if progress is not None:
                    progress(len(block))
        finally:
            body.close()
        return got, h.hexdigest()

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
        self, *, sha256: str, mtime: float, mode: int, checksum: bool, whole_object: bool = False,
        dirs: str | None = None,
    ) -> dict[str, Any]:
        extra: dict[str, Any] = {
            "Metadata": {
                META_SHA256: sha256,
                META_MTIME: repr(float(mtime)),  # repr round-trips the float exactly
                META_MODE: oct(mode & 0o7777),
            }
        }
        if dirs:
            extra["Metadata"][META_DIRS] = dirs
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

    def _etag_is_md5(self) -> bool:
        """Whether this target's ETags are MD5s of the bytes stored: not with SSE-KMS or
        SSE-C (S3 documents them as opaque there)."""
        return not (self.spec.sse and self.spec.sse.lower() != "aes256")

    def part_size(self, size: int) -> int:
        """The part size janitor uses for a multipart upload of `size` bytes (S3 allows
        10,000 parts)."""
        chunk = int(self._transfer_options()["multipart_chunksize"])
        if size > chunk * 10_000:
            chunk = -(-size // 10_000)
        return chunk

    def upload(
        self,
        source: str | int,
        key: str,
        *,
        sha256: str,
        size: int,
        mtime: float,
        mode: int,
        progress: Progress | None = None,
        md5: str | None = None,
        dirs: str | None = None,
    ) -> StoredObject:
        """Upload the first `size` bytes of `source` and prove the stored bytes are those.

        Below multipart_threshold: one PutObject carrying Content-MD5 and
        x-amz-checksum-sha256; an ETag equal to that MD5 proves the bytes. Above it: a
        multipart upload janitor drives itself, each part with its own Content-MD5 and
        SHA-256; proven when each part's ETag is its MD5 and the object's ETag is the MD5 of
        those. Any other answer (no ETag, another ETag, `verify: readback`) proves nothing,
        and the object is read back and hashed. VerifyFailed, with the object removed
        again, when the bytes differ.

        progress gets byte increments (negative when a retry sends bytes again).
        """
        sha256 = sha256.lower()
        fd = source if isinstance(source, int) else open_source(source)
        try:
            if md5 is None:
                md5 = md5_of_fd(fd, size)
            return self._upload_fd(fd, key, sha256=sha256, md5=md5.lower(), size=size, mtime=mtime,
                                   mode=mode, progress=progress,
                                   dirs=dirs if dirs and len(dirs) <= MAX_DIRS_META else None)
        finally:
            if not isinstance(source, int):
                os.close(fd)

    def _upload_fd(self, fd: int, key: str, *, sha256: str, md5: str, size: int, mtime: float, mode: int,
                   progress: Progress | None, dirs: str | None = None) -> StoredObject:
        use_checksum = self._checksums_supported
        try:
            try:
                put = self._upload_once(fd, key, sha256=sha256, md5=md5, size=size, mtime=mtime, mode=mode,
                                        progress=progress, checksum=use_checksum, dirs=dirs)
            except self._sdk_errors() as e:
                if not (use_checksum and self._is_client_error(e, _CHECKSUM_UNSUPPORTED_CODES)):
                    raise
                # Some S3-compatibles reject flexible checksums: retry once without them;
                # Content-MD5 and the ETag (or a read-back) still prove the stored bytes.
                self._checksums_supported = False
                put = self._upload_once(fd, key, sha256=sha256, md5=md5, size=size, mtime=mtime, mode=mode,
                                        progress=progress, checksum=False, dirs=dirs)
        except (TargetError, FileChanged):
            raise
        except self._sdk_errors() as e:  # before OSError: botocore timeouts subclass it
            raise self._error(e, action="upload", cls=UploadFailed) from None
        except OSError as e:
            raise UploadFailed(self._fail(f"cannot read the file for '{key}': {e.strerror or _one_line(e)}")) from None
        obj = StoredObject(key, size, sha256, float(mtime), mode & 0o7777, put.version_id, put.etag, dirs)
        try:
            if self.spec.verify != "readback" and put.proven:
                return obj
            self._read_back(key, put.version_id, size=size, sha256=sha256)
        except VerifyFailed:
            self._remove_bad(key, put.version_id)
            raise
        return obj

    def _read_back(self, key: str, version_id: str | None, *, size: int, sha256: str) -> None:
        """GET the object and hash it: the proof when the server gave none. A read-back that
        cannot be done keeps the source (VerifyFailed, one line)."""
        try:
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
            if version_id:
                kwargs["VersionId"] = version_id
            resp = self._active_client().get_object(**kwargs)
            got, digest = self._stream_body(resp["Body"], size, None, None, key=key)
        except VerifyFailed:
            raise VerifyFailed(self._fail(f"'{key}' read back longer than the {size} bytes sent; "
                                          "the stored copy is not the file (source kept)")) from None
        except TargetError as e:
            raise VerifyFailed(self._fail(f"'{key}': the server gave no proof of the bytes it stored and "
                                          f"reading it back failed ({e}); source kept")) from None
        except self._sdk_errors() as e:
            err = self._error(e, action="read back", key=key)
            raise VerifyFailed(f"{err}; the server gave no proof of the bytes it stored, source kept") from None
        except OSError as e:
            raise VerifyFailed(self._fail(f"'{key}': reading it back failed ({e}); source kept")) from None
        if got != size or digest != sha256:
            raise VerifyFailed(
                self._fail(f"'{key}' read back as {got} bytes sha256 {digest[:16]}, sent {size} bytes sha256 "
                           f"{sha256[:16]}: the server stored other bytes (source kept)")
            )

    def _remove_bad(self, key: str, version_id: str | None) -> None:
        """Remove an object that does not hold the bytes sent, so that no later run takes it
        for a copy (best effort: the source is kept either way)."""
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if version_id:
            kwargs["VersionId"] = version_id
        with contextlib.suppress(Exception):
            self._active_client().delete_object(**kwargs)

    def verified(self, obj: StoredObject, size: int, sha256: str, md5: str | None, fd: int | None = None) -> bool:
        """Whether an object already stored holds these bytes: size and digest metadata, and
        the server's own proof (ETag = MD5, or the multipart ETag computed from `fd`), else a
        read-back. `verify: readback` always reads back."""
        if not (obj.sha256 and obj.size == size and obj.sha256.lower() == sha256.lower()):
            return False
        etag = (obj.etag or "").lower()
        if self.spec.verify != "readback" and self._etag_is_md5() and etag:
            if "-" not in etag:
                if md5 is not None:
                    return etag == md5.lower()
            elif fd is not None:
                try:
                    return etag == self._composite_etag(fd, size)
                except (OSError, FileChanged):
                    return False
        try:
            self._read_back(obj.key, obj.version_id, size=size, sha256=sha256)
        except VerifyFailed:
            return False
        return True

    def _composite_etag(self, fd: int, size: int) -> str:
        chunk = self.part_size(size)
        md5s = b""
        for offset in range(0, size, chunk):
            h = hashlib.md5(usedforsecurity=False)
            end = min(offset + chunk, size)
            for pos in range(offset, end, _CHUNK):
                h.update(pread_exact(fd, pos, min(_CHUNK, end - pos)))
            md5s += h.digest()
        return f"{hashlib.md5(md5s, usedforsecurity=False).hexdigest()}-{-(-size // chunk)}"

    def _upload_once(
        self,
        fd: int,
        key: str,
        *,
        sha256: str,
        md5: str,
        size: int,
        mtime: float,
        mode: int,
        progress: Progress | None,
        checksum: bool,
        dirs: str | None = None,
    ) -> _Put:
        client = self.client if checksum else self._compat_client()
        if size < self._transfer_options()["multipart_threshold"]:
            extra = self._extra_args(sha256=sha256, mtime=mtime, mode=mode, checksum=checksum, whole_object=True,
                                     dirs=dirs)
            body = BoundedFdReader(fd, 0, size, limiter=self._limiter, progress=progress)
            resp = client.put_object(Bucket=self.bucket, Key=key, Body=body, ContentLength=size,
                                     ContentMD5=_b64_of_hex(md5), **extra)
            etag = str(resp.get("ETag") or "").strip('"').lower()
            # An ETag equal to the MD5 sent proves the bytes. Any other ETag proves nothing
            # either way (some servers' ETags are not MD5s, with encryption for one): the
            # object is then read back, which tells damage from a server's own ETag scheme.
            return _Put(_version(resp), etag or None, proven=bool(etag) and self._etag_is_md5() and etag == md5)
        return self._upload_multipart(client, fd, key, sha256=sha256, size=size, mtime=mtime, mode=mode, dirs=dirs,
                                      progress=progress, checksum=checksum)

    def _upload_multipart(self, client: Any, fd: int, key: str, *, sha256: str, size: int, mtime: float,
                          mode: int, progress: Progress | None, checksum: bool, dirs: str | None = None) -> _Put:
        """Parts read from the descriptor (bounded by `size`), each sent with its Content-MD5
        (and SHA-256), each part's ETag compared with its MD5 (a mismatch: no proof, the object
        is read back); aborted on any failure.

        Up to _PART_WINDOW parts are in flight at once (and in memory); they are taken back
        in order, so the SHA-256 of everything sent is compared with the file's digest.
        """
        from concurrent.futures import Future, ThreadPoolExecutor

        chunk = self.part_size(size)
        extra = self._extra_args(sha256=sha256, mtime=mtime, mode=mode, checksum=checksum, dirs=dirs)
        upload_id = client.create_multipart_upload(Bucket=self.bucket, Key=key, **extra)["UploadId"]
        parts: list[dict[str, Any]] = []
        md5s = b""
        whole = hashlib.sha256()
        state = {"proven": self._etag_is_md5()}

        def send(number: int, offset: int) -> tuple[bytes, bytes, dict[str, Any]]:
            length = min(chunk, size - offset)
            data = BoundedFdReader(fd, offset, length, limiter=self._limiter).read_all()
            part_md5 = hashlib.md5(data, usedforsecurity=False).digest()
            kwargs: dict[str, Any] = {
                "Bucket": self.bucket, "Key": key, "UploadId": upload_id, "PartNumber": number,
                "Body": data, "ContentLength": length, "ContentMD5": base64.b64encode(part_md5).decode(),
            }
            if checksum:
                kwargs["ChecksumAlgorithm"] = "SHA256"
                kwargs["ChecksumSHA256"] = base64.b64encode(hashlib.sha256(data).digest()).decode()
            resp = client.upload_part(**kwargs)
            if progress is not None:
                progress(length)
            etag = str(resp.get("ETag") or "").strip('"').lower()
            if etag != part_md5.hex():
                state["proven"] = False  # no proof for this part: the whole object is read back
            part: dict[str, Any] = {"ETag": resp.get("ETag"), "PartNumber": number}
            if checksum and resp.get("ChecksumSHA256"):
                part["ChecksumSHA256"] = resp["ChecksumSHA256"]
            return data, part_md5, part

        pending: list[Future[tuple[bytes, bytes, dict[str, Any]]]] = []
        pool = ThreadPoolExecutor(max_workers=_PART_WINDOW, thread_name_prefix="janitor-part")

        def take_oldest() -> None:
            nonlocal md5s
            data, part_md5, part = pending.pop(0).result()
            whole.update(data)
            md5s += part_md5
            parts.append(part)

        try:
            try:
                for number, offset in enumerate(range(0, size, chunk), 1):
                    if len(pending) >= _PART_WINDOW:
                        take_oldest()
                    pending.append(pool.submit(send, number, offset))
                while pending:
                    take_oldest()
            finally:
                for future in pending:
                    future.cancel()
                pool.shutdown(wait=True)
            if whole.hexdigest() != sha256:
                raise FileChanged("changed while it was being uploaded; kept")
            done = client.complete_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id,
                                                    MultipartUpload={"Parts": parts})
        except BaseException:
            with contextlib.suppress(Exception):
                client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            raise
        put = _Put(_version(done), str(done.get("ETag") or "").strip('"').lower() or None, proven=False)
        composite = f"{hashlib.md5(md5s, usedforsecurity=False).hexdigest()}-{len(parts)}"
        put.proven = bool(state["proven"]) and put.etag == composite
        return put

    # -- lifecycle ------------------------------------------------------------------------

    def get_lifecycle(self) -> list[dict[str, Any]]:
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

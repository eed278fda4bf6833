"""The stack's S3 store seen from a client (boto3): connect, check the keys, create the bucket.

boto3 is imported inside the functions (see :mod:`fakeface.stack`).
"""

from __future__ import annotations

import time

from fakeface.stack.config import REGION, StackError
from fakeface.stack.credentials import Credentials

#: S3 error codes that mean "these keys are not accepted here".
AUTH_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken",
              "AuthorizationHeaderMalformed", "ExpiredToken"}


def s3_client(endpoint: str, creds: Credentials, timeout: float = 10.0):
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=creds.access_key_id,
        aws_secret_access_key=creds.secret_access_key,
        aws_session_token=None,
        region_name=REGION,
        config=Config(
            connect_timeout=timeout, read_timeout=timeout, retries={"max_attempts": 2, "mode": "standard"},
            s3={"addressing_style": "path"},
        ),
    )


def explain_s3_error(error: Exception, endpoint: str, creds: Credentials, action: str) -> StackError:
    """A boto3 failure as one clear sentence (never with the secret in it)."""
    from botocore.exceptions import ClientError, EndpointConnectionError

    if isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code", "?")
        if code in AUTH_CODES:
            why = {
                "InvalidAccessKeyId": "the access key id is not known to the store",
                "SignatureDoesNotMatch": "the secret key does not match the access key id",
            }.get(code, "access denied")
            return StackError(
                f"S3 store at {endpoint} rejected the credentials ({code}: {why}) while trying to "
                f"{action}; key id {creds.masked_id} from {creds.source}. Use the stack's keys: "
                "eval \"$(fakeface stack env)\" (or unset AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)"
            )
        return StackError(f"S3 store at {endpoint}: {action} failed: {code}: "
                          f"{error.response.get('Error', {}).get('Message', '')}")
    if isinstance(error, EndpointConnectionError):
        return StackError(f"S3 store at {endpoint} is not reachable ({action}); start it with "
                          "`fakeface stack up`")
    return StackError(f"S3 store at {endpoint}: {action} failed: {type(error).__name__}: {error}")


def check_s3(endpoint: str, creds: Credentials, bucket: str) -> None:
    """Raise :class:`StackError` unless the store accepts ``creds`` and holds ``bucket``."""
    from botocore.exceptions import BotoCoreError, ClientError

    client = s3_client(endpoint, creds, timeout=5.0)
    try:
        client.head_bucket(Bucket=bucket)
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        if code in ("403", "Forbidden"):  # HEAD has no body: ask again with a GET to learn why
            try:
                client.list_objects_v2(Bucket=bucket, MaxKeys=1)
            except (ClientError, BotoCoreError) as inner:
                raise explain_s3_error(inner, endpoint, creds, f"read bucket {bucket!r}") from None
        if code in ("404", "NoSuchBucket"):
            raise StackError(f"S3 store at {endpoint} has no bucket {bucket!r}") from None
        raise explain_s3_error(error, endpoint, creds, f"read bucket {bucket!r}") from None
    except BotoCoreError as error:
        raise explain_s3_error(error, endpoint, creds, f"read bucket {bucket!r}") from None


def ensure_bucket(endpoint: str, creds: Credentials, bucket: str, wait_s: float = 15.0) -> bool:
    """Create ``bucket`` unless it exists; True when created. Retries while the store warms up."""
    from botocore.exceptions import BotoCoreError, ClientError

    client = s3_client(endpoint, creds, timeout=5.0)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
            if bucket in existing:
                return False
            client.create_bucket(Bucket=bucket)
            return True
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            if code in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                return False
            if code in AUTH_CODES or time.monotonic() > deadline:
                raise explain_s3_error(error, endpoint, creds, f"create bucket {bucket!r}") from None
        except BotoCoreError as error:
            if time.monotonic() > deadline:
                raise explain_s3_error(error, endpoint, creds, f"create bucket {bucket!r}") from None
        time.sleep(0.3)

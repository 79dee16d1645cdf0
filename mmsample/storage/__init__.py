"""Storage: datasets on object stores and web servers, read and written through fsspec URLs.

Place in the data flow: under the readers' shard table and the sharding tool's output, for any
dataset folder that is not a local path: `s3://`, `gs://`, `https://`, any fsspec protocol, or
`pipe:CMD` (read-only, streamed-only). `location` parses and redacts URLs, `store` makes each
request (retried by `retry`, with timeouts, through one client per process: `filesystem`),
`obstore_client` reads s3:// byte ranges through obstore (a client chosen by name in
`store.S3_CLIENTS`; registered on import here), `remote` reads shards (sequential chunks with
read-ahead, coalesced concurrent range prefetch), `cache` keeps whole shards on a local disk
under a size limit, `ranges` coalesces byte ranges.
"""

from .cache import CacheWarning, ShardCache
from .location import Location, parse_location, redact
from .obstore_client import ObstoreStore
from .remote import ReadSettings, RemoteShards
from .retry import RetryPolicy, is_transient
from .store import FsspecStore, PipeStore, Store, open_store

__all__ = [
    "CacheWarning",
    "FsspecStore",
    "Location",
    "ObstoreStore",
    "PipeStore",
    "ReadSettings",
    "RemoteShards",
    "RetryPolicy",
    "ShardCache",
    "Store",
    "is_transient",
    "open_store",
    "parse_location",
    "redact",
]

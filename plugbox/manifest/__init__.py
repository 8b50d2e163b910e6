"""The plugin package (SPEC §2): reading `manifest.json`, checking every rule, and the typed Manifest
the rest of plugbox works from. Also finds candidate plugin directories.

Every failure is a ManifestError naming the field (a dotted path like `ingress[0].signature.scheme`)
and a short rule name. Unknown top-level fields are ignored for forward compatibility (as are unknown
keys inside `net` and `signature`); the types of known fields are always checked, and a JSON null
counts as absent.

Choices the spec leaves open, made here:
- `id` is at most 64 characters; matching is ASCII-only (re.ASCII), so a Unicode look-alike such as
  the Kelvin sign cannot pass as `k`; reserved ids compare case-insensitively.
- `main` must end in `.py` and be a regular file. With no plugin directory (built-ins) only the
  lexical checks run (relative, no escape by `..`).
- `sdkVersion` must be one the host supports (`SUPPORTED_SDK_VERSIONS`).
- `net.allow` entries follow the one host grammar of `plugbox.net.hosts` (shared with fetch and the
  exemption list) and are stored canonical: names lower-cased, IP literals in standard form, IPv6 in
  brackets, ports without leading zeros. `allowConfigHosts` names string fields of the configSchema
  (dotted paths allowed).
- Ingress signatures: see `plugbox.manifest._ingress`.
- OpenWA's own fields (`minOpenWAVersion`, `message:annotation-*` hooks, `configUi`) load with a
  note each instead of being dropped or failing the load: see `plugbox.manifest._openwa`.

The package is split by section: `_document` (the Manifest, reading and the top-level fields),
`_ingress` (ingress routes and signatures), `_fields` (the generic JSON field readers); this
`__init__` only re-exports. It reads files but runs no plugin code and imports no host service.
"""

from plugbox.manifest._document import (
    MANIFEST_MAX_BYTES,
    SUPPORTED_SDK_VERSIONS,
    Manifest,
    NetPolicy,
    discover,
    is_skipped_dir,
    load_manifest,
    parse_manifest,
)
from plugbox.manifest._ingress import (
    DEFAULT_SECRET_FIELD,
    SIGNATURE_SCHEMES,
    IngressChallenge,
    IngressRoute,
    IngressSignature,
)
from plugbox.manifest._openwa import OpenWACompat

__all__ = [
    "DEFAULT_SECRET_FIELD",
    "MANIFEST_MAX_BYTES",
    "SIGNATURE_SCHEMES",
    "SUPPORTED_SDK_VERSIONS",
    "IngressChallenge",
    "IngressRoute",
    "IngressSignature",
    "Manifest",
    "NetPolicy",
    "OpenWACompat",
    "discover",
    "is_skipped_dir",
    "load_manifest",
    "parse_manifest",
]

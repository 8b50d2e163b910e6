"""A plugin's `configSchema`: checking the schema itself, validating config against it, and the
secret handling built on it (masking for the API, keeping secrets on an unchanged write, the values
to redact from logs).

Schema format (SPEC §2): the root is an object node, `{"type": "object", "properties": {...}}`
(`type` may be omitted at the root). Every node has a `type` among string, number, boolean, array,
object, textarea, and may carry title, description, default, enum, required, secret, min, max,
pattern, items, properties. Unknown option keys are refused, so that a typo such as `"secert"`
cannot silently leave a secret unmasked.

Validation semantics:
- a JSON null counts as absent (so a PUT can clear a value); absent fields take their default;
- `required: true` means present, non-null and, for strings, non-empty; an object node may also list
  its required children JSON-Schema style (`"required": ["a", "b"]`);
- keys not in `properties` are refused; an object node without `properties` holds free-form plain data;
- min/max bound a number's value and a string's or array's length; `pattern` must match the whole string;
- an absent optional object whose properties carry defaults appears with those defaults.

Bounds, because schemas come from untrusted manifests and are checked in the host: at most
SCHEMA_MAX_DEPTH nested nodes and SCHEMA_MAX_PROPERTIES properties; patterns at most
PATTERN_MAX_CHARS long and compiled with RE2 (google-re2), whose matching time is linear in the
input whatever the pattern, so no pattern can stall the host the way `(a+)+$` or `a*a*a*b` stalls
Python's backtracking `re`; RE2 has no backreferences or lookaround, and refuses them; a
config document at most CONFIG_MAX_BYTES encoded. `secret` applies to string fields outside arrays,
so that every secret has a dotted path, and takes no `default` or `enum` (the operator sets secrets;
a value in the manifest is public, and a default would count as a configured webhook secret).

Error paths are dotted (`auth.token`) with array indices (`servers[2].host`); `(root)` is the whole
document. ConfigError has no rule attribute, so its message ends with the rule, like `[enum]`.

The package: `_node` (the parsed tree and the bounds), `_parser` (checking the schema), `_check`
(validating config), `_schema` (ConfigSchema and secrets); this `__init__` only re-exports. It is
pure data validation: it does no I/O and imports nothing from the host services.
"""

from plugbox.config_schema._node import (
    CONFIG_MAX_BYTES,
    MASK,
    PATTERN_MAX_CHARS,
    SCHEMA_MAX_DEPTH,
    SCHEMA_MAX_PROPERTIES,
)
from plugbox.config_schema._schema import ConfigSchema

__all__ = [
    "CONFIG_MAX_BYTES",
    "MASK",
    "PATTERN_MAX_CHARS",
    "SCHEMA_MAX_DEPTH",
    "SCHEMA_MAX_PROPERTIES",
    "ConfigSchema",
]

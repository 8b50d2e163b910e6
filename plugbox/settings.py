"""Every tunable default of plugbox (SPEC §10), typed, in one place.

Sources, later wins: the defaults below, a TOML config file (`PLUGBOX_CONFIG` or an explicit path),
then `PLUGBOX_<FIELD>` environment variables (e.g. `PLUGBOX_HOOK_BUDGET_MS=2000`). Values are
validated by msgspec; a bad value raises ConfigError naming the setting. Nothing else in plugbox
holds a literal default for these: host code reads a Settings (or `DEFAULTS` for a parameter
default); the worker side, which must not import this module, gets its values from the host in the
spawn message.

Not here, on purpose: limits that are part of a contract rather than a choice of the operator (the
engine's history clamp and text cap in `plugbox.engines.base`, manifest and config-schema format
limits in their modules, argument caps in the capability verb schemas). Changing those would make a
plugin that works on one host fail on another.
(Past 400 lines by design: one typed field and its docstring per setting, all in one place.)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import msgspec

from plugbox.errors import ConfigError

__all__ = ["DEFAULTS", "HOST_ID_PATTERN", "Settings", "load_settings"]

PositiveMs = Annotated[int, msgspec.Meta(ge=1)]
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]

# Letters, digits, `.`, `_`, `-`; at most 48, so it fits PostgreSQL's 63-byte application name
# behind the lease connection's prefix (storage/postgres_cluster.py), where other hosts read it.
HOST_ID_PATTERN = r"^([A-Za-z0-9][A-Za-z0-9._-]{0,47})?$"
ENV_PREFIX = "PLUGBOX_"
MAX_CONFIG_FILE_BYTES = 1 << 20


class Settings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Operator settings. Durations are milliseconds, sizes bytes. Each field's docstring says what
    it bounds; SPEC §10 names the ones a plugin author can observe."""

    data_dir: str = "./plugbox-data"
    """Where the database, plugin scratch dirs and installed packages live."""
    database_url: str = ""
    """Empty: the embedded SQLite file `plugbox.db` under data_dir. `postgresql://...` (libpq URL or
    key=value string): a PostgreSQL database, which several hosts may share (docs/postgres.md)."""
    database_pool_size: PositiveInt = 4
    """PostgreSQL: connections one host keeps open (the writer, readers and scans share them)."""
    database_statement_timeout_ms: PositiveMs = 5000
    """PostgreSQL: longest one statement may run before the server cancels it."""
    host_id: Annotated[str, msgspec.Meta(pattern=HOST_ID_PATTERN)] = ""
    """This host's name among hosts sharing a database: each plugin's status and last error are
    recorded and shown per host under it (docs/postgres.md). Two hosts must not share one. Empty:
    made once from the machine's hostname and a random suffix, and kept in `<data_dir>/host-id`."""
    cluster_lease_interval_ms: PositiveMs = 2000
    """PostgreSQL shared by several hosts: how often a host tries to take the leases of sessions no
    live host holds; a dead host's sessions move within about this long."""
    queue_claim_ms: PositiveMs = 10000
    """PostgreSQL shared by several hosts: how long a host's claim on a queued delivery (outbound
    webhook or async ingress) lasts unless renewed. The claimer renews it every third of this while
    its attempt runs, so no other host attempts that delivery; a host that dies leaves its claims to
    expire, and its deliveries are attempted elsewhere within about this long."""
    queue_poll_ms: PositiveMs = 1000
    """PostgreSQL shared by several hosts: how often a host's delivery queues look for deliveries
    other hosts queued or left behind (nothing announces them)."""
    plugins_dir: str = "./plugins"
    """Where untrusted plugins are discovered (one directory each)."""
    catalog_dir: str | None = None
    """What `GET /api/catalog` offers to install (one plugin directory each); unset: the example
    plugins shipped beside the `plugbox` package (`examples/plugins`), when present."""
    host: str = "127.0.0.1"
    """Address the HTTP API listens on."""
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 8787
    """Port of the HTTP API (0: any free port)."""

    hook_budget_ms: PositiveMs = 5000
    """Time one sandboxed hook handler may take before its result is treated as `continue`."""
    hook_plugin_event_budget_ms: PositiveMs | None = None
    """Time all of one plugin's handlers for one event may take together, from the moment the event
    reaches the first of them; None: hook_budget_ms. A handler gets what is left, and none once it is
    spent, so a plugin registering many handlers does not multiply its budget."""
    hook_chain_budget_ms: PositiveMs = 10000
    """Time the handlers a caller waits for (those holding `hooks:modify`) may take together for one
    event; past it the remaining ones are skipped for that event. Observers never count: the caller
    does not wait for them."""
    hook_handlers_per_event: PositiveInt = 8
    """Handlers one plugin may register for one event; the next registration is refused."""
    hook_observers_pending: PositiveInt = 64
    """Observer invocations (handlers without `hooks:modify`, which run beside the chain) one plugin
    may have unanswered at once; past it the event is dropped for that plugin and counted."""
    hook_observers_pending_per_cause: PositiveInt = 16
    """Of those, how many may be for events another plugin caused (its sends fire `message:sending`
    and `message:sent` to everyone); past it such an event is dropped for that observer and the drop
    charged to the plugin that caused it, so a flood of sends cannot crowd out the events the
    observer gets from the engine."""
    hook_observers_pending_total: PositiveInt = 1024
    """Observer invocations unanswered host-wide; past it, a plugin with its fair share of them (this
    over the plugins with any unanswered) or more has the event dropped, charged to it, while one
    with fewer still gets it (so the host holds at most twice this)."""
    lifecycle_budget_ms: PositiveMs = 30000
    """Time for each of load, on_load, on_enable, on_disable, on_config_change."""
    health_budget_ms: PositiveMs = 5000
    """Time for a health_check answer."""
    liveness_window_ms: PositiveMs = 5000
    """Time a worker has to answer a ping after a hook timeout before it is killed."""
    capability_timeout_ms: PositiveMs = 30000
    """Time one capability call may take on the host."""
    send_timeout_factor: PositiveInt = 4
    """Send verbs (they fire hooks themselves) get capability_timeout_ms times this."""
    max_calls_in_flight: PositiveInt = 32
    """Capability calls one worker may have in flight; the next one is refused."""
    engine_calls_in_flight: PositiveInt = 32
    """Engine calls (sends) plugins may have in flight host-wide; the Cloud API engine sends through one
    pool of 100 connections. Past it, a plugin holding its fair share of it (this over the plugins
    with calls in flight) or more waits within its call's timeout; one holding less still goes out at
    once, so the host holds at most twice this (64, leaving the pool room for the host's own calls,
    which never take a slot). A freed slot goes to the waiting plugin holding the fewest."""
    engine_calls_in_flight_per_plugin: PositiveInt = 8
    """Engine calls (sends) one plugin may have in flight; past it the plugin's next send waits behind
    its own, within its call's timeout."""
    messages_sends_per_s_per_plugin: PositiveInt = 20
    """Sends (messages.send_text, messages.reply, conversations.send) one plugin may make per second,
    on every session together: a token bucket, checked before the message:sending hooks run."""
    messages_sends_burst_per_plugin: PositiveInt = 40
    """The send bucket's size: sends one plugin may make at once before the rate applies."""
    messages_send_wait_max_ms: Annotated[int, msgspec.Meta(ge=0)] = 1000
    """A send past its plugin's rate waits for the bucket up to this long; one that would wait longer
    is refused with a CapabilityError naming messages_sends_per_s_per_plugin."""
    worker_memory_bytes: PositiveInt = 256 << 20
    """RLIMIT_AS of a worker."""
    worker_open_files: PositiveInt = 256
    """RLIMIT_NOFILE of a worker."""
    worker_start_concurrency: PositiveInt = 16
    """Workers starting at once (spawn, confinement, hello, load of `main`). A burst of enables (boot,
    a bulk enable) waits for a slot before any plugin's lifecycle budget starts to run."""
    boot_restore_wait_ms: PositiveMs = 15000
    """How long the host's start waits for the plugins it re-enables at boot before it starts the
    engine (and `serve` its API): plugins still enabling then come up in the background, so one plugin
    slow to enable (up to three lifecycle budgets, charged nothing) cannot hold back messaging."""
    host_open_files: PositiveInt = 65536
    """Soft RLIMIT_NOFILE the host raises itself to when it starts (never past the hard limit, never
    lowered): every running worker holds two fds on the host."""
    worker_file_size_bytes: PositiveInt = 64 << 20
    """RLIMIT_FSIZE of a worker."""
    worker_scratch_bytes: Annotated[int, msgspec.Meta(ge=0)] = 32 << 20
    """Size of a worker's scratch tmpfs; 0: no limit beyond worker_file_size_bytes."""
    worker_cpu_limit_percent: Annotated[int, msgspec.Meta(ge=0)] = 90
    """CPU a worker may use per window, in percent of one CPU; 0: no CPU watchdog."""
    worker_cpu_window_ms: PositiveMs = 10000
    """Length of the CPU watchdog's window."""
    worker_env_allow: tuple[str, ...] = ("LANG", "LC_ALL", "TZ")
    """Environment variables a worker keeps; everything else is scrubbed before it starts."""
    worker_cgroups: str = "auto"
    """A cgroup per worker: "required" (a plugin whose group cannot be made does not start), "auto"
    (where this host can make groups; reported skipped elsewhere) or "off". See confine/cgroups.py."""
    cgroup_parent: str = ""
    """Where worker groups go, relative to each hierarchy's root; "": the host's own (delegated) cgroup."""
    worker_cpu_quota_percent: Annotated[int, msgspec.Meta(ge=0)] = 100
    """CPU quota of a worker's group, in percent of one CPU: throttled past it, not killed; 0: none."""
    worker_cgroup_memory_bytes: PositiveInt = 288 << 20
    """Memory limit of a worker's group, all memory counted: heap (worker_memory_bytes) + scratch tmpfs."""
    worker_pids_max: PositiveInt = 64
    """Tasks in a worker's group, threads included."""
    workers_memory_total_bytes: Annotated[int, msgspec.Meta(ge=0)] | None = None
    """Memory all workers' groups may hold together (on their common parent group), all memory
    counted, no swap: past it the kernel's OOM killer ends the largest worker, never the host.
    None: the machine's memory (or the host's own cgroup limit, if less) minus a reserve for the
    host and the OS of 1/8 of it, at least 1 GiB (see confine/cgroups.py); 0: no total."""
    workers_cpu_total_percent: Annotated[int, msgspec.Meta(ge=0)] | None = None
    """CPU all workers' groups may use together, in percent of one CPU; past it they are throttled,
    sharing it evenly. None: all the host's CPUs but half of one (at least 50); 0: no total."""
    workers_pids_total: Annotated[int, msgspec.Meta(ge=0)] | None = None
    """Tasks all workers' groups may hold together, threads included. None: the kernel's task
    room (or the host's own cgroup limit, if less) minus 1/8 of it, at least 256; 0: no total."""
    worker_uids: str = "auto"
    """On a non-root host, a uid per worker from the host user's /etc/subuid range (newuidmap):
    "required", "auto" (where possible; reported skipped elsewhere) or "off". See confine/userns.py."""
    frame_max_bytes: PositiveInt = 16 << 20
    """Largest bridge frame either side accepts."""
    channel_high_water_bytes: PositiveInt = 1 << 20
    """Bytes the host may queue to one worker before it stops reading that worker's channel
    (backpressure): a worker's replies are then bounded by this plus one reply and one read batch."""
    channel_held_max_bytes: PositiveInt = 16 << 20
    """Memory the answers held for one worker may take while the queue to it is above the high-water
    mark (one is always held, however large); past it an answer is replaced by an error naming it."""
    channel_bytes_total: PositiveInt = 128 << 20
    """Bytes all workers' channels together may keep, host-wide: every byte queued to a worker (below
    its high-water mark too) and the answers held for it; at least 4 x channel_high_water_bytes, so
    that four workers may each fill their queue to the mark at once. Past it, the plugin keeping the
    most over its fair share (this total / the plugins keeping some) is refused its answer, or ended;
    a plugin within its share never is (plugbox/totals/held.py). Queues are measured when they cross
    the mark and every channel_bytes_sweep_ms: in between they may exceed it by what they grew."""
    channel_bytes_sweep_ms: PositiveMs = 200
    """How often the host measures every worker's queue for channel_bytes_total (one timer for all
    channels; a tick costs a short call per channel)."""
    channel_drain_timeout_ms: PositiveMs | None = None
    """How long a worker may leave the queue to it above the high-water mark before it is killed
    ("not reading its channel"), counted as its failure; None: the liveness window."""
    channel_cpu_percent: PositiveInt = 50
    """Host CPU one worker's channel may spend (handling its frames: inline calls, logs, decode),
    in percent of one CPU, as a token bucket; past it, that channel alone is paused for the deficit."""
    channel_cpu_burst_ms: PositiveMs = 250
    """Host CPU time one worker's channel may spend at once before its share applies."""
    channel_cpu_total_percent: PositiveInt = 80
    """Host CPU all workers' channels may spend together, in percent of one CPU (the rest is the
    host's own and the share of plugins within their fair share); past it, the plugins spending more
    than a fair share of it (this total / the plugins that spent host CPU in the last second) are
    paused, never one within its fair share."""
    channel_cpu_total_burst_ms: PositiveMs = 1000
    """Host CPU time all workers' channels may spend at once before that total applies."""
    plain_decode_max_bytes: PositiveInt = 1 << 20
    """Largest value a worker sends that the host decodes with no schema to bound it (hook,
    webhook, search and health results); larger ones are refused. A stored value larger than this
    is kept encoded, never decoded by the host (decoding can cost ~70x the bytes)."""
    log_fields_max_bytes: PositiveInt = 64 << 10
    """Largest encoded `fields` of one log line the host decodes; larger ones are replaced by a note."""
    log_lines_per_window: PositiveInt = 200
    """Log lines relayed per plugin per window; the rest are counted and dropped."""
    log_window_ms: PositiveMs = 10000
    """Window of the log rate limit."""
    log_line_max_chars: PositiveInt = 8192
    """Longest relayed log line (and handler error, health message); longer ones are cut."""
    log_bytes_per_minute: PositiveInt = 480 << 10
    """Host log bytes one plugin may fill per minute (its log lines and handler errors), whatever
    its line count: 200 lines of 8192 chars would be ~10 MB a minute. A token bucket."""
    log_bytes_burst: PositiveInt = 64 << 10
    """How much of log_bytes_per_minute a plugin may spend at once."""
    log_bytes_per_minute_total: PositiveInt = 4 << 20
    """Host log bytes all plugins together may fill per minute. Past it, lines of the plugins
    putting more than a fair share of it there (this total / the plugins that logged lately) are
    dropped and counted, never those of a plugin within its fair share."""
    log_bytes_total_burst: PositiveInt = 1 << 20
    """How much of log_bytes_per_minute_total all plugins together may spend at once."""
    storage_quota_bytes: PositiveInt = 50 << 20
    """Bytes of storage one plugin may hold, as they take on disk (keys, values and conversation
    records, each row with its per-row and page overhead)."""
    storage_total_bytes: PositiveInt = 4 << 30
    """Bytes of storage all plugins on the database may hold together (at least storage_quota_bytes).
    Each plugin holding data is guaranteed min(storage_quota_bytes, this / plugins holding data) and
    grows past that only into space no other plugin claims (docs/security.md, "Storage")."""
    storage_write_bytes_per_s: PositiveInt = 4 << 20
    """Write rate of one plugin (a token bucket; each write costs at least a 4 KiB page); past it the
    plugin's own writes wait, never another plugin's."""
    storage_write_burst_bytes: PositiveInt = 16 << 20
    """Size of that bucket: what a plugin may write at once before it waits."""
    storage_write_max_wait_ms: Annotated[int, msgspec.Meta(ge=0)] = 2000
    """A write that would wait longer than this for its plugin's bucket is refused."""
    storage_list_max_keys: PositiveInt = 10000
    """Keys one storage.list call may return; past it the call is refused (plugins page instead)."""
    storage_cache_entries: PositiveInt = 4096
    """Recently read storage values kept decoded-ready in memory, host-wide."""
    storage_cache_value_max_bytes: PositiveInt = 1024
    """Larger storage values bypass the read cache."""
    storage_busy_timeout_ms: PositiveMs = 5000
    """How long an SQLite statement waits for a lock held by another connection."""
    conversation_messages_per_plugin: PositiveInt = 10_000
    """Sent-conversation records kept per plugin; the oldest go first."""
    conversation_rows_per_plugin: PositiveInt = 100_000
    """Mappings (and, separately, handover rows) one plugin may hold."""
    handover_human_chats_per_plugin: PositiveInt = 10_000
    """Chats one plugin may hold handed to a human at once. Every host keeps those chats in memory
    (each inbound message asks whether its chat is held), so this bounds the host memory one plugin
    makes it keep (about 600 bytes a chat)."""
    handover_human_chats_total: PositiveInt = 200_000
    """Chats all plugins together may hold handed to a human (about 120 MB of every host's memory).
    Each plugin holding some may hold its share, min(handover_human_chats_per_plugin, this total /
    plugins holding chats); past its share its next hold is refused, never another plugin's."""
    fetch_timeout_ms: PositiveMs = 15000
    """net.fetch timeout when the plugin names none."""
    fetch_timeout_max_ms: PositiveMs = 30000
    """Longest net.fetch timeout a plugin may ask for."""
    fetch_body_max_bytes: PositiveInt = 10 << 20
    """Largest net.fetch response body; past it the connection is closed and the call fails."""
    fetch_max_in_flight: PositiveInt = 16
    """net.fetch calls in flight host-wide; more wait for a slot within their own timeout."""
    fetch_max_in_flight_per_plugin: PositiveInt = 4
    """One plugin's share of fetch_max_in_flight, running or waiting; past it a fetch is refused at once."""
    fetch_body_bytes_in_flight: PositiveInt = 32 << 20
    """Response-body bytes the host holds for net.fetch at once (a body reserves its declared length,
    or fetch_body_max_bytes when it declares none); more wait within their own timeout."""
    fetch_body_bytes_per_plugin: PositiveInt = 20 << 20
    """One plugin's share of fetch_body_bytes_in_flight; past it its fetches wait behind its own (two
    bodies that declare no length, each reserving fetch_body_max_bytes, still run side by side)."""
    fetch_exempt_hosts: tuple[str, ...] = ()
    """Hosts exempt from the public-address rule (never from a plugin's allowlist); net.allow syntax."""
    breaker_threshold: PositiveInt = 5
    """Consecutive crashes, kills or hook timeouts that open a plugin's circuit breaker."""
    breaker_stable_ms: PositiveMs = 60000
    """How long a (re)started plugin runs without failure before its failure count is forgiven."""
    handler_error_threshold: PositiveInt = 5
    """Consecutive hook handler errors that open a plugin's circuit breaker (any success resets it)."""
    recent_failures_kept: PositiveInt = 20
    """Failures kept per plugin for the API (`recentFailures`)."""
    live_feed_queue_max: PositiveInt = 1000
    """Events (log lines, failures) queued for one reader of the live event stream; past it the
    reader loses the newest and is told how many."""
    live_feed_max_readers: PositiveInt = 32
    """Readers of the live event stream at once (dashboards, `logs --follow`); more are refused."""
    live_feed_keepalive_ms: PositiveMs = 15000
    """Quiet time after which the live event stream sends a keepalive comment."""
    restart_backoff_initial_ms: PositiveMs = 200
    """First delay before restarting a crashed worker; doubles each time."""
    restart_backoff_max_ms: PositiveMs = 30000
    """Longest delay between restarts."""
    shutdown_cap_ms: PositiveMs = 10000
    """Time all on_disable calls share at shutdown."""
    loopback_history_per_chat: PositiveInt = 1000
    """Messages the loopback engine keeps per chat."""
    loopback_chat_bytes: PositiveInt = 4 << 20
    """Bytes of messages the loopback engine keeps per chat (the newest message always stays)."""
    loopback_history_bytes: PositiveInt = 64 << 20
    """Bytes of messages the loopback engine keeps across every chat of every session; the oldest go
    first, and a chat they empty is forgotten (plugins choose what is sent, and to which chat)."""
    loopback_chats_per_session: PositiveInt = 2000
    """Chats the loopback engine keeps per session; past it, the least recently active one is
    forgotten with its messages (a plugin chooses the chats it sends to, and `get_chats` lists
    them all on the host's loop)."""
    loopback_sessions: tuple[str, ...] = ("default",)
    """Sessions `plugbox serve` creates on the loopback engine at start (comma-separated in the env)."""
    loopback_sent_max: PositiveInt = 10000
    """Outbound messages the loopback engine keeps in its `sent` record."""
    loopback_sent_bytes: PositiveInt = 16 << 20
    """Bytes the loopback engine keeps in its `sent` record."""

    engine: str = "loopback"
    """The messaging engine: `loopback` (in-memory, the default) or `cloudapi` (Meta's WhatsApp
    Cloud API; needs the `cloudapi_*` settings below, see docs/cloud-api.md)."""
    cloudapi_access_token: str = ""
    """Cloud API: the Graph API bearer token (a system-user token). A secret: never logged."""
    cloudapi_app_secret: str = ""
    """Cloud API: the Meta app secret that signs webhook calls (`X-Hub-Signature-256`). A secret."""
    cloudapi_verify_token: str = ""
    """Cloud API: the token Meta echoes in the webhook subscription handshake. A secret."""
    cloudapi_phone_number_ids: tuple[str, ...] = ()
    """Cloud API: the business phone number ids to serve; each is one session of the same id."""
    cloudapi_api_version: str = "v21.0"
    """Cloud API: the Graph API version in every request path."""
    cloudapi_base_url: str = "https://graph.facebook.com"
    """Cloud API: where the Graph API lives (tests point it at a local server)."""
    cloudapi_timeout_ms: PositiveMs = 10000
    """Cloud API: time one Graph API request may take, connect to last byte."""
    cloudapi_webhook_body_max_bytes: PositiveInt = 1 << 20
    """Cloud API: largest webhook notification body accepted."""
    cloudapi_seen_per_session: PositiveInt = 1000
    """Cloud API: messages (and, separately, contacts) remembered per session to answer the verbs
    Meta has no endpoint for (history, chats, contacts)."""
    cloudapi_seen_bytes_per_session: PositiveInt = 16 << 20
    """Cloud API: bytes of message text remembered per session; the oldest messages go first."""

    confinement: str = "strict"
    """`strict`: a plugin whose required layer cannot apply does not start. `degraded`: operator
    opt-in, start with what is available and say loudly what is missing."""
    use_netns: bool = False
    """Also put each worker in a new user + network namespace (no network device at all)."""
    allow_unsigned_ingress: bool = False
    """Accept ingress routes whose signature scheme is `none`."""
    api_keys: tuple[str, ...] = ()
    """API keys with read access."""
    admin_api_keys: tuple[str, ...] = ()
    """API keys with management access."""
    ingress_body_max_bytes: PositiveInt = 1 << 20
    """Largest ingress request body."""
    ingress_in_flight_per_plugin: PositiveInt = 16
    """Ingress requests one plugin's webhook handlers may have unanswered; past it the next is
    answered 503 at once (the sender retries), so a plugin that holds its requests open holds at
    most this many, bodies included."""
    ingress_instances_per_plugin: PositiveInt = 100
    """Ingress instances an operator may create for one plugin (`/api/plugins/{id}/ingress/instances`);
    past it a create is refused with 409. Each is a database row and a path a sender can be given."""
    ingress_instance_secret_max_chars: PositiveInt = 4096
    """Longest secret value an operator may set on an ingress instance."""
    ingress_dedup_max_entries: PositiveInt = 10000
    """Delivery ids remembered to refuse replays, for all plugins together; past it the plugin
    remembering the most forgets its oldest (a flood of its routes reopens only its own replays)."""
    ingress_queue_max_per_plugin: PositiveInt = 1000
    """Async ingress deliveries waiting for one plugin (all its routes and instances); past it its
    routes answer 429 until the queue drains. The bound is the plugin's own: a flood at one plugin
    fills only that plugin's queue."""
    ingress_queue_max_per_route: PositiveInt = 500
    """Async ingress deliveries waiting for one route of one plugin (all instances); past it 429."""
    ingress_queue_max_bytes_per_plugin: PositiveInt = 64 << 20
    """Bytes of request one plugin's waiting and dead-lettered async ingress deliveries may hold (a
    delivered one keeps none); past it its routes answer 429."""
    ingress_queue_max_bytes: PositiveInt = 512 << 20
    """Bytes of request all plugins' waiting and dead-lettered async ingress deliveries may hold
    together before the host refuses (429) the plugins holding their fair share of it (this over the
    plugins holding any); one holding less is still admitted, so the host holds at most twice this."""
    ingress_max_attempts: PositiveInt = 8
    """Attempts to hand one async ingress delivery to its plugin before it is dead-lettered."""
    ingress_backoff_initial_ms: PositiveMs = 1000
    """Delay before an async ingress delivery's second attempt; doubles (with jitter) up to the maximum."""
    ingress_backoff_max_ms: PositiveMs = 300000
    """Longest delay between two attempts of one async ingress delivery."""
    ingress_delivery_budget_ms: PositiveMs = 30000
    """Time the plugin's handler gets for one async ingress delivery (sync routes get hook_budget_ms:
    their sender is waiting). Past it the attempt fails and is retried."""
    ingress_max_in_flight: PositiveInt = 8
    """Async ingress deliveries being handed to plugins at once, host-wide."""
    ingress_max_in_flight_per_plugin: PositiveInt = 2
    """Async ingress deliveries being handed to one plugin at once, so one slow or flooded plugin
    holds at most this many of the host-wide slots; a slot freed goes to the plugin with the fewest
    running, so plugins holding every slot between them cannot queue another behind their backlogs."""
    ingress_dedup_window_sec: PositiveInt = 86400
    """How long a `dedupOn` key is remembered (a repeat within it is acknowledged, not delivered)."""
    ingress_dedup_keys_per_plugin: PositiveInt = 100000
    """`dedupOn` keys remembered per plugin; past it the oldest of that plugin's are forgotten first."""
    ingress_dedup_keys_total: PositiveInt = 1000000
    """`dedupOn` keys remembered host-wide (all plugins on the database). Past it the plugin furthest
    over its share, min(ingress_dedup_keys_per_plugin, this over the plugins holding keys), loses its
    oldest; a plugin within its share never loses a key to its neighbours."""
    ingress_dedup_sweep_interval_ms: PositiveMs = 60000
    """How often a host forgets the `dedupOn` keys whose window has ended, of every plugin, so they
    stop counting against the bounds; an expired key stays on disk at most about this long."""
    ingress_history_per_plugin: PositiveInt = 1000
    """Delivered and dead-lettered async ingress deliveries kept per plugin (each kind); oldest go first."""
    install_zip_max_bytes: PositiveInt = 10 << 20
    """Largest plugin archive upload, and largest archive installed from a URL."""
    install_url_timeout_ms: PositiveMs = 30000
    """Install from a URL: the whole download (slot, DNS, connect, body) must end within this."""
    install_unpacked_max_bytes: PositiveInt = 50 << 20
    """Largest total size of an archive's members once unpacked."""
    install_max_files: PositiveInt = 1000
    """Most members a plugin archive may hold."""
    install_max_depth: PositiveInt = 16
    """Most path components in one zip member's name (its file name included)."""
    install_max_ratio: PositiveInt = 200
    """Highest uncompressed:compressed ratio of a zip member of 1 MiB or more (zip bombs)."""
    webhook_max_attempts: PositiveInt = 8
    """Delivery attempts of one outbound webhook before it goes to the dead-letter list."""
    webhook_backoff_initial_ms: PositiveMs = 1000
    """Delay before the second attempt; doubles each attempt (with jitter) up to the maximum."""
    webhook_backoff_max_ms: PositiveMs = 300000
    """Longest delay between two attempts of one delivery."""
    webhook_timeout_ms: PositiveMs = 10000
    """Time one delivery attempt may take (resolve, connect, send, read the answer)."""
    webhook_max_in_flight: PositiveInt = 8
    """Delivery attempts in flight host-wide (their own slots, apart from net.fetch's)."""
    webhook_response_max_bytes: PositiveInt = 64 << 10
    """Largest receiver answer read; past it the attempt fails."""
    webhook_body_max_bytes: PositiveInt = 1 << 20
    """Largest delivery body (the JSON envelope); a larger event is not queued, and is logged."""
    webhook_queue_max: PositiveInt = 10000
    """Deliveries waiting host-wide; past it new deliveries are refused (logged) until it drains."""
    webhook_pending_per_cause: PositiveInt = 1000
    """Of those, deliveries of events one plugin caused (its sends) that may wait; past it that
    plugin's new deliveries are dropped and counted against it, while other events still queue."""
    webhook_history_max: PositiveInt = 10000
    """Delivered and dead-lettered deliveries kept host-wide (each kind); the oldest go first."""
    webhook_history_max_bytes: PositiveInt = 256 << 20
    """Bytes of body those delivered (and, apart, dead-lettered) deliveries may keep host-wide; the
    oldest go first. Rows alone would let a send flood keep webhook_history_max x a full body."""
    webhook_subscriptions_max: PositiveInt = 100
    """Outbound webhook subscriptions the operator may create."""

    def __post_init__(self) -> None:
        if self.confinement not in ("strict", "degraded"):
            raise ValueError("confinement must be 'strict' or 'degraded'")
        for name in ("worker_cgroups", "worker_uids"):
            if getattr(self, name) not in ("required", "auto", "off"):
                raise ValueError(f"{name} must be 'required', 'auto' or 'off'")
        if self.storage_total_bytes < self.storage_quota_bytes:
            raise ValueError(f"storage_total_bytes ({self.storage_total_bytes}) must be at least "
                             f"storage_quota_bytes ({self.storage_quota_bytes}): one plugin's quota must fit the total")
        if self.handover_human_chats_total < self.handover_human_chats_per_plugin:
            raise ValueError(f"handover_human_chats_total ({self.handover_human_chats_total}) must be at least "
                             f"handover_human_chats_per_plugin ({self.handover_human_chats_per_plugin})")
        if self.ingress_dedup_keys_total < self.ingress_dedup_keys_per_plugin:
            raise ValueError(f"ingress_dedup_keys_total ({self.ingress_dedup_keys_total}) must be at least "
                             f"ingress_dedup_keys_per_plugin ({self.ingress_dedup_keys_per_plugin}): one plugin's "
                             "keys must fit the total")
        for total, one in (("workers_memory_total_bytes", "worker_cgroup_memory_bytes"),
                           ("workers_pids_total", "worker_pids_max")):
            if getattr(self, total) and getattr(self, total) < getattr(self, one):
                raise ValueError(f"{total} ({getattr(self, total)}) must be at least {one} "
                                 f"({getattr(self, one)}), or 0 for no total")
        if self.fetch_timeout_ms > self.fetch_timeout_max_ms:
            raise ValueError("fetch_timeout_ms must not exceed fetch_timeout_max_ms")
        if self.webhook_backoff_initial_ms > self.webhook_backoff_max_ms:
            raise ValueError("webhook_backoff_initial_ms must not exceed webhook_backoff_max_ms")
        if self.ingress_backoff_initial_ms > self.ingress_backoff_max_ms:
            raise ValueError("ingress_backoff_initial_ms must not exceed ingress_backoff_max_ms")
        if self.channel_bytes_total < 4 * self.channel_high_water_bytes:
            raise ValueError(f"channel_bytes_total ({self.channel_bytes_total}) must be at least 4 x "
                             f"channel_high_water_bytes ({4 * self.channel_high_water_bytes})")
        if self.engine not in ("loopback", "cloudapi"):
            raise ValueError("engine must be 'loopback' or 'cloudapi'")
        if self.engine == "cloudapi":
            for name in ("cloudapi_access_token", "cloudapi_app_secret", "cloudapi_verify_token",
                         "cloudapi_phone_number_ids"):
                if not getattr(self, name):
                    raise ValueError(f"{name} is required when engine is 'cloudapi'")

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)

    @property
    def plugins_path(self) -> Path:
        return Path(self.plugins_dir)

    @property
    def catalog_path(self) -> Path:
        if self.catalog_dir is not None:
            return Path(self.catalog_dir)
        return Path(__file__).resolve().parent.parent / "examples" / "plugins"


DEFAULTS = Settings()
"""The defaults, for parameters of classes that are also built without Settings (tests, tools):
`def __init__(self, quota_bytes: int = DEFAULTS.storage_quota_bytes)` keeps the literal here."""

_FIELDS = {f.name: f for f in msgspec.structs.fields(Settings)}


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in Settings.__struct_fields__:
        raw = environ.get(ENV_PREFIX + name.upper())
        if raw is None:
            continue
        field = _FIELDS[name]
        if field.type is bool:
            word = raw.strip().lower()
            if word not in _TRUE | _FALSE:
                raise ConfigError(ENV_PREFIX + name.upper(), f"expected true or false, got {raw!r}")
            out[name] = word in _TRUE
        elif field.type == tuple[str, ...]:
            out[name] = tuple(x.strip() for x in raw.split(",") if x.strip())
        elif field.type is str:
            out[name] = raw
        else:
            try:
                out[name] = int(raw)
            except ValueError:
                raise ConfigError(ENV_PREFIX + name.upper(), f"expected an integer, got {raw!r}") from None
    return out


def load_settings(
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Build Settings from defaults, the config file, the environment and explicit overrides."""
    environ = os.environ if environ is None else environ
    doc: dict[str, Any] = {}
    path = path or environ.get(ENV_PREFIX + "CONFIG")
    if path:
        p = Path(path)
        try:
            raw = p.read_bytes()
        except OSError as exc:
            raise ConfigError(str(p), f"cannot read config file: {exc.strerror}") from None
        if len(raw) > MAX_CONFIG_FILE_BYTES:
            raise ConfigError(str(p), f"config file larger than {MAX_CONFIG_FILE_BYTES} bytes")
        try:
            doc.update(msgspec.toml.decode(raw))
        except msgspec.DecodeError as exc:
            raise ConfigError(str(p), f"invalid TOML: {exc}") from None
    doc.update(_from_env(environ))
    doc.update(overrides)
    try:
        return msgspec.convert(doc, Settings)
    except (msgspec.ValidationError, ValueError) as exc:
        raise ConfigError("settings", str(exc)) from None

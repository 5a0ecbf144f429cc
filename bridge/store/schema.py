"""The store's schema: tables, indexes and their migrations, in order.

Schema version ``n`` is reached by running ``MIGRATIONS[:n]``; a backend keeps
the version it is at (SQLite: ``PRAGMA user_version``) and runs the missing
ones at open, each in one transaction with its version bump.

The statements are SQLite's, written to stay close to what PostgreSQL also
reads, so that its backend's migrations follow these one for one. The
differences a PostgreSQL backend translates, and nothing else:

- ``INTEGER PRIMARY KEY`` (SQLite's rowid alias) → ``BIGINT GENERATED ALWAYS
  AS IDENTITY PRIMARY KEY``;
- ``REAL`` timestamps (Unix seconds) → ``DOUBLE PRECISION``; ``BLOB`` → ``BYTEA``;
- ``WITHOUT ROWID`` (a storage hint) → nothing;
- partial indexes (``WHERE state = 'queued'``) are the same in both.

Job states in the partial indexes are the literal names of
``bridge.core.jobstates``; a change of a state's name is a migration.
"""

from __future__ import annotations

MIGRATIONS: list[str] = [
    # 1: the first schema
    """
    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY,
        account TEXT NOT NULL,
        id_sms_api TEXT NOT NULL,
        kind TEXT NOT NULL,
        phone_number TEXT NOT NULL,
        message TEXT NOT NULL DEFAULT '',
        url TEXT,
        priority INTEGER NOT NULL,
        due REAL NOT NULL,
        expires REAL NOT NULL,
        state TEXT NOT NULL,
        reason TEXT,
        device_id TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        parts INTEGER NOT NULL DEFAULT 1,
        encoding TEXT NOT NULL DEFAULT 'gsm7',
        report INTEGER NOT NULL DEFAULT 1,
        created REAL NOT NULL,
        updated REAL NOT NULL,
        dispatched_at REAL,
        UNIQUE (account, id_sms_api)
    );
    CREATE INDEX jobs_queue ON jobs (account, priority DESC, due, id) WHERE state = 'queued';
    CREATE INDEX jobs_expiry ON jobs (expires) WHERE state = 'queued';
    CREATE INDEX jobs_on_device ON jobs (device_id, dispatched_at) WHERE state = 'dispatched';
    CREATE INDEX jobs_account_state ON jobs (account, state);
    CREATE TABLE job_history (
        job_id INTEGER NOT NULL,
        state TEXT NOT NULL,
        at REAL NOT NULL,
        device_id TEXT,
        reason TEXT
    );
    CREATE INDEX job_history_job ON job_history (job_id);
    CREATE TABLE inbound_sms (
        id INTEGER PRIMARY KEY,
        account TEXT NOT NULL,
        device_id TEXT NOT NULL,
        sender TEXT NOT NULL,
        text TEXT NOT NULL,
        received_at REAL NOT NULL,
        stored_at REAL NOT NULL,
        sim INTEGER,
        incomplete INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX inbound_sms_account ON inbound_sms (account, id);
    CREATE TABLE call_events (
        id INTEGER PRIMARY KEY,
        account TEXT NOT NULL,
        device_id TEXT NOT NULL,
        direction TEXT NOT NULL,
        number TEXT NOT NULL,
        started_at REAL NOT NULL,
        duration_s REAL NOT NULL,
        job_id INTEGER,
        stored_at REAL NOT NULL
    );
    CREATE INDEX call_events_account ON call_events (account, id);
    CREATE TABLE call_notes (
        id INTEGER PRIMARY KEY,
        account TEXT NOT NULL,
        device_id TEXT,
        number TEXT NOT NULL,
        text TEXT NOT NULL,
        source TEXT NOT NULL,
        at REAL NOT NULL
    );
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY,
        account TEXT NOT NULL,
        kind TEXT NOT NULL,
        order_key TEXT NOT NULL,
        payload TEXT NOT NULL,
        created REAL NOT NULL,
        next_attempt REAL NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        delivered_at REAL,
        dead INTEGER NOT NULL DEFAULT 0,
        last_error TEXT
    );
    CREATE INDEX outbox_pending ON outbox (next_attempt, id) WHERE delivered_at IS NULL AND dead = 0;
    CREATE TABLE agent_events (
        device_id TEXT NOT NULL,
        event_id TEXT NOT NULL,
        at REAL NOT NULL,
        PRIMARY KEY (device_id, event_id)
    ) WITHOUT ROWID;
    CREATE TABLE devices (
        id TEXT PRIMARY KEY,
        token_generation INTEGER NOT NULL DEFAULT 0,
        last_seen REAL,
        last_status TEXT
    );
    """,
    # 2: the API's records: contacts, tracked links and their clicks, opt-outs,
    # verification codes (hashed)
    """
    CREATE TABLE contacts (
        account TEXT NOT NULL,
        phone_number TEXT NOT NULL,
        firstname TEXT NOT NULL DEFAULT '',
        lastname TEXT NOT NULL DEFAULT '',
        email TEXT NOT NULL DEFAULT '',
        address TEXT NOT NULL DEFAULT '',
        country_code TEXT NOT NULL DEFAULT '',
        created REAL NOT NULL,
        updated REAL NOT NULL,
        PRIMARY KEY (account, phone_number)
    );
    CREATE TABLE links (
        code TEXT PRIMARY KEY,
        account TEXT NOT NULL,
        job_id INTEGER NOT NULL,
        id_sms_api TEXT NOT NULL,
        phone_number TEXT NOT NULL,
        url TEXT NOT NULL,
        created REAL NOT NULL
    );
    CREATE INDEX links_message ON links (account, id_sms_api);
    CREATE TABLE clicks (
        id INTEGER PRIMARY KEY,
        code TEXT NOT NULL,
        at REAL NOT NULL,
        user_agent TEXT,
        ip TEXT
    );
    CREATE INDEX clicks_code ON clicks (code);
    CREATE TABLE opt_outs (
        account TEXT NOT NULL,
        phone_number TEXT NOT NULL,
        at REAL NOT NULL,
        keyword TEXT NOT NULL,
        PRIMARY KEY (account, phone_number)
    ) WITHOUT ROWID;
    CREATE TABLE verification_codes (
        id INTEGER PRIMARY KEY,
        account TEXT NOT NULL,
        phone_number TEXT NOT NULL,
        salt BLOB NOT NULL,
        digest BLOB NOT NULL,
        created REAL NOT NULL,
        expires REAL NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        max_attempts INTEGER NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending',
        verified_at REAL,
        id_sms_api TEXT
    );
    CREATE INDEX verification_codes_number ON verification_codes (account, phone_number, id);
    CREATE INDEX jobs_account_created ON jobs (account, created);
    CREATE INDEX inbound_sms_account_stored ON inbound_sms (account, stored_at);
    """,
    # 3: webhook delivery: the first undelivered event of each (account, order_key)
    # is found by index, so that claims stay cheap with a large backlog.
    """
    CREATE INDEX outbox_order ON outbox (account, order_key, id) WHERE delivered_at IS NULL AND dead = 0;
    """,
    # 4: pairing tokens (``simbridge pair``): only their SHA-256 is kept
    """
    CREATE TABLE device_tokens (
        digest TEXT PRIMARY KEY,
        device_id TEXT NOT NULL,
        created REAL NOT NULL,
        revoked REAL
    ) WITHOUT ROWID;
    CREATE INDEX device_tokens_device ON device_tokens (device_id);
    """,
    # 5: API tokens (SMSFLOW's 24-hour tokens): only their SHA-256 is kept
    """
    CREATE TABLE api_tokens (
        digest TEXT PRIMARY KEY,
        account TEXT NOT NULL,
        username TEXT NOT NULL,
        created REAL NOT NULL,
        expires REAL NOT NULL,
        revoked REAL
    ) WITHOUT ROWID;
    CREATE INDEX api_tokens_username ON api_tokens (username);
    """,
    # 6: sticky senders: the device that last took a job for each contact of an
    # account whose device is ``sticky`` (see JobQueue.claim)
    """
    CREATE TABLE senders (
        account TEXT NOT NULL,
        phone_number TEXT NOT NULL,
        device_id TEXT NOT NULL,
        at REAL NOT NULL,
        PRIMARY KEY (account, phone_number)
    ) WITHOUT ROWID;
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)

# The columns of model.Job, in its field order (every backend selects jobs so).
JOB_COLUMNS = ("id, account, id_sms_api, kind, phone_number, message, url, priority, due, expires, "
               "state, reason, device_id, attempts, parts, encoding, report, created, updated")

# model.VerificationCode, with the state of the job that carried the code.
CODE_COLUMNS = ("c.id, c.account, c.phone_number, c.salt, c.digest, c.created, c.expires, c.attempts, "
                "c.max_attempts, c.state, c.verified_at, c.id_sms_api, j.state")
CODE_FROM = "verification_codes AS c LEFT JOIN jobs AS j ON j.account = c.account AND j.id_sms_api = c.id_sms_api"

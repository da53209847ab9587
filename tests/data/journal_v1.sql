-- The journal schema of version 1 (cpuu_fleet/journal.py before the PostgreSQL journal), kept
-- to make an old journal in the upgrade tests.
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,              -- play | retry | resume | step (ad-hoc single step)
    parent_run TEXT,                 -- the run a retry/resume continues
    status TEXT NOT NULL,            -- running | completed | stopped | interrupted
    stop_reason TEXT,                -- why later batches were not started (max_fail_percentage, Ctrl-C)
    started_at TEXT NOT NULL,
    ended_at TEXT,
    operator TEXT,
    playbook TEXT,
    inventory TEXT,
    limit_pattern TEXT,
    mode TEXT,
    payload_sha256 TEXT,
    tool_version TEXT,
    check_mode INTEGER NOT NULL DEFAULT 0,
    options_json TEXT
);
CREATE TABLE IF NOT EXISTS hosts (
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    host TEXT NOT NULL,
    play TEXT,
    wave TEXT,                       -- the inventory wave group (or the play's pattern)
    batch INTEGER,                   -- serial batch number within the play, from 1
    address TEXT,
    groups_json TEXT,
    state TEXT NOT NULL,
    user TEXT,                       -- the interactive user CPUU ran for
    exit_code INTEGER,               -- CPUU's bit mask, kept whole (values above 255 are real)
    exit_flags TEXT,                 -- decoded, e.g. SUCCESS|SWITCH_ERR
    killed INTEGER NOT NULL DEFAULT 0, -- we stopped CPUU on deadline: its exit code 1 is NOT success
    error_class TEXT,                -- unreachable | authentication | certificate | timeout | remote | protocol | policy | cpuu | local | limit
    error_message TEXT,
    started_at TEXT,
    ended_at TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    result_dir TEXT,                 -- where this host's collected files are, relative to reports/
    task_name TEXT,                  -- the scheduled task the run step registered (for resume)
    PRIMARY KEY (run_id, host)
);
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    host TEXT NOT NULL,
    step TEXT NOT NULL,              -- connect | preflight | push | run | collect
    attempt INTEGER NOT NULL,
    status TEXT NOT NULL,            -- running | ok | changed | skipped | failed | killed
    error_class TEXT,
    error_message TEXT,
    started_at TEXT NOT NULL,
    ended_at TEXT,
    duration_s REAL,
    details_json TEXT
);
CREATE INDEX IF NOT EXISTS attempts_by_host ON attempts (run_id, host);
CREATE TABLE IF NOT EXISTS profiles (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    host TEXT NOT NULL,
    user TEXT,
    profile TEXT NOT NULL,
    current_code INTEGER NOT NULL,
    previous_code INTEGER,
    result_file TEXT,                -- local path of the collected CSV, relative to reports/
    line INTEGER
);
CREATE INDEX IF NOT EXISTS profiles_by_host ON profiles (run_id, host);
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    host TEXT NOT NULL,
    kind TEXT NOT NULL,              -- result | log | ini | other
    remote_path TEXT NOT NULL,
    local_path TEXT NOT NULL,        -- relative to reports/
    sha256 TEXT NOT NULL,             -- of the bytes as the host has them (secrets are masked in the stored copy); the INI: as stored
    size INTEGER NOT NULL,           -- bytes received from the host (likewise)
    collected_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS files_by_host ON files (host, sha256);
CREATE TABLE IF NOT EXISTS audit_rows (  -- an audit step's rows (cpuu_fleet.audit.AuditRow)
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    host TEXT NOT NULL,
    attempt_id INTEGER NOT NULL,     -- the audit step's attempt: a play may audit twice
    row_json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_rows_by_host ON audit_rows (run_id, host);
CREATE TABLE IF NOT EXISTS leases (  -- one live controller per run (see lease.py)
    run_id TEXT PRIMARY KEY,
    owner_json TEXT NOT NULL,        -- machine, pid, process start, operator
    acquired_at TEXT NOT NULL,
    heartbeat_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS lease_hosts (  -- ... and per host: the key makes a host held once
    host TEXT PRIMARY KEY,
    run_id TEXT NOT NULL
);

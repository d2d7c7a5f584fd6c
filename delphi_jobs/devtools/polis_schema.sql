-- The subset of the Polis database that delphi-jobs reads (DESIGN 2.5), with Polis's own column names
-- and types. Used to seed embedded PostgreSQL for tests and the demo; never applied to a real Polis DB.
CREATE TABLE IF NOT EXISTS conversations (
    zid integer PRIMARY KEY,
    topic varchar(1000),
    description varchar(50000),
    created bigint DEFAULT (extract(epoch from now()) * 1000)::bigint
);
CREATE TABLE IF NOT EXISTS comments (
    tid integer NOT NULL,
    zid integer NOT NULL REFERENCES conversations (zid),
    pid integer NOT NULL,
    txt varchar(1000) NOT NULL,
    created bigint DEFAULT (extract(epoch from now()) * 1000)::bigint,
    mod integer NOT NULL DEFAULT 0,
    active boolean NOT NULL DEFAULT true,
    PRIMARY KEY (zid, tid)
);
CREATE TABLE IF NOT EXISTS votes (
    zid integer NOT NULL,
    pid integer NOT NULL,
    tid integer NOT NULL,
    vote smallint,
    created bigint DEFAULT (extract(epoch from now()) * 1000)::bigint
);
CREATE TABLE IF NOT EXISTS votes_latest_unique (
    zid integer NOT NULL,
    pid integer NOT NULL,
    tid integer NOT NULL,
    vote smallint,
    modified bigint DEFAULT (extract(epoch from now()) * 1000)::bigint,
    UNIQUE (zid, pid, tid)
);
CREATE TABLE IF NOT EXISTS math_main (
    zid integer NOT NULL,
    math_env varchar(999) NOT NULL,
    data jsonb NOT NULL,
    last_vote_timestamp bigint,  -- NOT NULL in Polis; nullable here so tests can seed bare rows
    caching_tick bigint NOT NULL DEFAULT 0,
    math_tick bigint NOT NULL DEFAULT -1,
    modified bigint DEFAULT (extract(epoch from now()) * 1000)::bigint,
    UNIQUE (zid, math_env)
);
CREATE TABLE IF NOT EXISTS reports (
    rid bigserial PRIMARY KEY,
    report_id varchar(300) NOT NULL UNIQUE,
    zid integer NOT NULL,
    created bigint DEFAULT (extract(epoch from now()) * 1000)::bigint
);
CREATE TABLE IF NOT EXISTS report_comment_selections (
    rid bigint NOT NULL,
    tid integer NOT NULL,
    selection smallint NOT NULL,
    zid integer NOT NULL,
    modified bigint DEFAULT (extract(epoch from now()) * 1000)::bigint,
    PRIMARY KEY (rid, tid)
);

package registry

// The registry's tables. Times are the database's (now()), so that the
// hosts' clocks need not agree; displays are redacted.
const schema = `
CREATE TABLE IF NOT EXISTS xpraproxy_instances (
	id        TEXT PRIMARY KEY,
	address   TEXT NOT NULL,
	started   TIMESTAMPTZ NOT NULL,
	heartbeat TIMESTAMPTZ NOT NULL
);
CREATE TABLE IF NOT EXISTS xpraproxy_sessions (
	instance TEXT NOT NULL REFERENCES xpraproxy_instances(id) ON DELETE CASCADE,
	id       BIGINT NOT NULL,
	username TEXT NOT NULL,
	display  TEXT NOT NULL,
	pool     TEXT NOT NULL DEFAULT '',
	client   TEXT NOT NULL DEFAULT '',
	started  TIMESTAMPTZ NOT NULL,
	bytes    BIGINT NOT NULL DEFAULT 0,
	active   TIMESTAMPTZ NOT NULL,
	PRIMARY KEY (instance, id)
);
CREATE INDEX IF NOT EXISTS xpraproxy_sessions_username ON xpraproxy_sessions (username);
CREATE TABLE IF NOT EXISTS xpraproxy_affinity (
	username TEXT NOT NULL,
	pool     TEXT NOT NULL,
	member   TEXT NOT NULL,
	updated  TIMESTAMPTZ NOT NULL,
	PRIMARY KEY (username, pool)
);`

// schemaLock serialises schema creation between instances that start
// together (CREATE ... IF NOT EXISTS races on the catalog otherwise).
const schemaLock = 0x78707261 // "xpra"

const (
	upsertInstance = `INSERT INTO xpraproxy_instances (id, address, started, heartbeat) VALUES ($1, $2, $3, now())
ON CONFLICT (id) DO UPDATE SET address = EXCLUDED.address, started = EXCLUDED.started, heartbeat = now()`

	// upsertSessions writes many sessions in one statement.
	upsertSessions = `INSERT INTO xpraproxy_sessions (instance, id, username, display, pool, client, started, bytes, active)
SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::timestamptz[], $8::bigint[], $9::timestamptz[])
ON CONFLICT (instance, id) DO UPDATE SET display = EXCLUDED.display, pool = EXCLUDED.pool, client = EXCLUDED.client,
	started = EXCLUDED.started, bytes = EXCLUDED.bytes, active = EXCLUDED.active`

	upsertAffinity = `INSERT INTO xpraproxy_affinity (username, pool, member, updated)
SELECT u, p, m, now() FROM unnest($1::text[], $2::text[], $3::text[]) AS t(u, p, m)
ON CONFLICT (username, pool) DO UPDATE SET member = EXCLUDED.member, updated = now()`

	deleteSessions = `DELETE FROM xpraproxy_sessions WHERE instance = $1 AND id = ANY($2::bigint[])`

	// resyncSessions drops this instance's rows that are not live any
	// more (after an outage, or left by an earlier run with its name).
	resyncSessions = `DELETE FROM xpraproxy_sessions WHERE instance = $1 AND NOT (id = ANY($2::bigint[]))`

	expireInstances = `DELETE FROM xpraproxy_instances WHERE heartbeat < now() - make_interval(secs => $1)`

	fleetCounts = `SELECT s.pool, s.display, count(*) FROM xpraproxy_sessions s JOIN xpraproxy_instances i ON i.id = s.instance
WHERE s.instance <> $1 AND s.pool <> '' AND i.heartbeat >= now() - make_interval(secs => $2) GROUP BY s.pool, s.display`

	fleetInstances = `SELECT i.id, i.address, i.started, i.heartbeat, count(s.id) FROM xpraproxy_instances i
LEFT JOIN xpraproxy_sessions s ON s.instance = i.id
WHERE i.heartbeat >= now() - make_interval(secs => $1) GROUP BY i.id ORDER BY i.id`

	userSessions = `SELECT count(*) FROM xpraproxy_sessions s JOIN xpraproxy_instances i ON i.id = s.instance
WHERE s.username = $1 AND i.heartbeat >= now() - make_interval(secs => $2)`

	insertReservation = `INSERT INTO xpraproxy_sessions (instance, id, username, display, client, started, active)
VALUES ($1, $2, $3, $4, '', now(), now()) ON CONFLICT (instance, id) DO NOTHING`

	selectAffinity = `SELECT member FROM xpraproxy_affinity WHERE username = $1 AND pool = $2`

	allSessions = `SELECT s.instance, s.id, s.username, s.display, s.pool, s.client, s.started, s.bytes, s.active
FROM xpraproxy_sessions s JOIN xpraproxy_instances i ON i.id = s.instance
WHERE i.heartbeat >= now() - make_interval(secs => $1) ORDER BY s.instance, s.id`
)

// controlChannel carries "INSTANCE/ID" payloads: stop that session.
const controlChannel = "xpraproxy_control"

-- The demo target's schema: people and what they did.
-- seed.py runs this file, so running it drops and recreates the two demo tables.

DROP TABLE IF EXISTS events;
DROP TABLE IF EXISTS users;

CREATE TABLE users (
    id bigserial PRIMARY KEY,
    email text NOT NULL UNIQUE,
    first_name text NOT NULL,
    last_name text NOT NULL,
    phone text,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE events (
    id bigserial PRIMARY KEY,
    user_id bigint NOT NULL REFERENCES users (id),
    kind text NOT NULL,
    payload jsonb NOT NULL,  -- {"ip": "10.x.y.z", "path": "/products/42"}
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX events_user_id_idx ON events (user_id);
CREATE INDEX events_created_at_idx ON events (created_at);

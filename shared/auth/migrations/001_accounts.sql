-- Accounts of a site. Passwords are argon2id hashes; status is derived (disabled iff disabled_at is set).
CREATE TABLE accounts (
    name          text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9_.@-]{1,64}$'),
    password_hash text NOT NULL,
    role          text NOT NULL CHECK (role IN ('callback-only', 'read-only', 'read-append', 'admin')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    disabled_at   timestamptz
);

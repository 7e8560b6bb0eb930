-- EvoForge schema, version 1: runs, node memory, parent selections, cognition.
-- {embedding_dim} is filled in from the configured embedding model when the database is first migrated.

CREATE TABLE runs (
    id          text PRIMARY KEY,
    task        text NOT NULL,
    task_dir    text NOT NULL DEFAULT '',
    config      jsonb NOT NULL DEFAULT '{}',
    status      text NOT NULL DEFAULT 'running',
    stop_reason text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE nodes (
    id              text PRIMARY KEY,
    run_id          text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    round           integer NOT NULL,
    lane            integer NOT NULL DEFAULT 0,
    island          integer NOT NULL DEFAULT 0,
    parent_ids      text[] NOT NULL DEFAULT '{}',
    inspiration_ids text[] NOT NULL DEFAULT '{}',
    name            text NOT NULL DEFAULT '',
    motivation      text NOT NULL DEFAULT '',
    code            text NOT NULL DEFAULT '',
    diff            text NOT NULL DEFAULT '',
    status          text NOT NULL,
    score           double precision,
    valid           boolean NOT NULL DEFAULT false,
    metrics         jsonb NOT NULL DEFAULT '{}',
    stage_results   jsonb NOT NULL DEFAULT '[]',
    analysis        text NOT NULL DEFAULT '',
    error           text,
    feedback        text,
    code_hash       text NOT NULL,
    embedding       vector({embedding_dim}),
    cognition_ids   text[] NOT NULL DEFAULT '{}',
    tokens_in       bigint NOT NULL DEFAULT 0,
    tokens_out      bigint NOT NULL DEFAULT 0,
    llm_seconds     double precision NOT NULL DEFAULT 0,
    eval_seconds    double precision NOT NULL DEFAULT 0,
    resources       jsonb NOT NULL DEFAULT '{}',
    policy          text NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX nodes_run_round_idx ON nodes (run_id, round, lane);
CREATE INDEX nodes_run_code_hash_idx ON nodes (run_id, code_hash);
CREATE INDEX nodes_embedding_idx ON nodes USING hnsw (embedding vector_cosine_ops);

-- One row per (run, lane, round): the parent chosen for that round. UCB1 visit counts are derived
-- from it, and a resumed round reads its choice back instead of choosing again.
CREATE TABLE selections (
    run_id          text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    lane            integer NOT NULL,
    round           integer NOT NULL,
    parent_id       text NOT NULL,
    inspiration_ids text[] NOT NULL DEFAULT '{}',
    policy          text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, lane, round)
);
CREATE INDEX selections_parent_idx ON selections (run_id, parent_id);

-- Human priors (kind 'prior') and insights written back by the Analyzer (kind 'insight', with the
-- node they came from). task NULL means the item applies to every task. node_id has no foreign key:
-- an insight is written before its node is recorded.
CREATE TABLE cognition (
    id           text PRIMARY KEY,
    task         text,
    kind         text NOT NULL CHECK (kind IN ('prior', 'insight')),
    title        text NOT NULL DEFAULT '',
    content      text NOT NULL,
    source       text NOT NULL DEFAULT '',
    node_id      text,
    content_hash text NOT NULL,
    embedding    vector({embedding_dim}) NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX cognition_task_content_idx ON cognition ((coalesce(task, '')), content_hash);
CREATE INDEX cognition_embedding_idx ON cognition USING hnsw (embedding vector_cosine_ops);

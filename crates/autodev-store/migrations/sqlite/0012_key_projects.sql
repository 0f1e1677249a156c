-- A key scoped to projects (`autodev keys create --project P`): the ids of the projects it
-- sees, comma-separated. NULL: every project, as before.
ALTER TABLE api_keys ADD COLUMN projects TEXT;
